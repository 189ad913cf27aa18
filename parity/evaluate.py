"""`eval_text`: perplexity and KL divergence of an engine against a reference on real text, and where the
experts go, as llama.cpp's `llama-perplexity --kl-divergence` measures them.

The text is tokenized with the engine's tokenizer and run in windows (windows.py). For each batch of
windows the reference's side of every scored token is one record (reference_file.py: exact target
log-probability, top-1 token and probability, expert sets; the distribution as uint16 log-probabilities),
computed by the reference in the same run or read from a file a previous run saved; the engine's logits are
compared with it and dropped. Memory holds one batch of windows whatever the text's length (plus 8 bytes
per scored token for the KL quantiles); the figures are the same whether the reference is computed in this
run, saved, or reused.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.common.paths import check_output_dir
from mixtral_trt.common.progress import bar, step
from mixtral_trt.common.validate import as_int, decode_text
from mixtral_trt.mixtral_ref.model import Mixtral
from mixtral_trt.runtime.engine import Engine
from mixtral_trt.runtime.routing import expert_sets

from .divergence import Accumulator, reference_records
from .eval_report import EvalReport
from .reference_file import ReferenceHeader, read_reference, sha256_file, sha256_text, write_header
from .scorers import EngineScorer, ModelScorer, open_reference
from .windows import WindowPlan, plan_windows

DEFAULT_CTX = 512
BATCH_BYTES = 128 << 20  # engine logits of one batch of windows: [B, ctx, V] float32
ROWS = 256  # scored tokens per float64 [ROWS, V] computation


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; one-line errors naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise MixtralTrtError(f"--text {path}: is a directory; give a UTF-8 text file") from None
    except OSError as e:
        raise MixtralTrtError(f"--text {path}: {e.strerror or e}") from None
    return decode_text(f"--text {path}", data)


def eval_text(
    engine: Engine | str | Path,
    text: str | Path,
    reference: Engine | Mixtral | str | Path | None = None,
    ctx: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    reference_logits: str | Path | None = None,
    save_reference: str | Path | None = None,
    progress=None,
) -> EvalReport:
    """Evaluate `engine` (an Engine or its directory) on `text` (the text, or a Path to a UTF-8 file).

    reference: a checkpoint directory (mixtral_ref in fp32), an engine directory, an open Engine or Mixtral;
    reference_logits: a file saved by an earlier run (`save_reference`) instead; neither: the engine's
    perplexity only. ctx / stride: the windows (stride defaults to ctx); max_tokens: use only the text's first
    tokens. ctx defaults to DEFAULT_CTX or the engine's context if shorter."""
    if reference is not None and reference_logits is not None:
        raise MixtralTrtError("--reference and --reference-logits: give one (the file replaces the reference pass)")
    if save_reference is not None and reference is None:
        raise MixtralTrtError("--save-reference: needs --reference (the pass whose logits it stores)")
    name = f"--text {text}" if isinstance(text, Path) else "text"
    content = read_text(text) if isinstance(text, Path) else text
    if save_reference is not None:  # never over or inside an input
        paths = (reference, getattr(engine, "path", engine))  # text given as a str is the text itself
        inputs = [x for x in paths if isinstance(x, str | Path)] + ([text] if isinstance(text, Path) else [])
        check_output_dir(save_reference, inputs, what="--save-reference file")
    with step(progress, "load engine"):
        engine = engine if isinstance(engine, Engine) else runtime.load(engine)
    ids = np.asarray(engine.tokenizer.encode(content, bos=False), np.int64)
    if max_tokens is not None:
        ids = ids[:as_int("max_tokens", max_tokens, 1)]
        if len(ids) == max_tokens:
            name += f" (its first {max_tokens} tokens, --max-tokens)"
    ctx = min(DEFAULT_CTX, engine.max_seq) if ctx is None else ctx
    plan = plan_windows(len(ids), ctx, stride, name, engine.max_seq)
    cfg = engine.config
    header = ReferenceHeader(sha256_file(engine.tokenizer.path), cfg.vocab_size, sha256_text(content), len(ids),
                             plan.ctx, plan.stride, plan.scored, cfg.num_layers, cfg.top_k, cfg.num_experts, "")
    scorer = EngineScorer(engine)

    ref_scorer, stored = None, None
    if reference is not None:
        with step(progress, "load reference"):
            ref_scorer = open_reference(reference)
        header = _reference_header(header, ref_scorer, engine)
    elif reference_logits is not None:
        stored_header, stored = read_reference(reference_logits)
        stored_header.check_matches(header, Path(reference_logits))
        header = stored_header
    acc = Accumulator(cfg.num_layers, cfg.num_experts)
    writer = atomic_file(save_reference, "wb") if save_reference is not None else contextlib.nullcontext()
    with writer as f:
        if f is not None:
            write_header(f, header)
        _run(plan, ids, engine.tokenizer.bos_id, scorer, ref_scorer, stored, header, acc, f, progress)
    return EvalReport.build(engine, header, plan, name, acc, reference_logits, save_reference)


def _reference_header(header: ReferenceHeader, ref: EngineScorer | ModelScorer, engine: Engine) -> ReferenceHeader:
    """The header of this run's reference pass; a reference of another vocabulary or tokenizer is an error."""
    rc, ec = ref.config, engine.config
    if rc.vocab_size != ec.vocab_size:
        raise MixtralTrtError(f"--reference: vocabulary of {rc.vocab_size} tokens, the engine's has {ec.vocab_size}")
    tok = ref.tokenizer_file()
    if tok is not None and sha256_file(tok) != header.tokenizer_sha256:
        raise MixtralTrtError(f"--reference: its tokenizer {tok} is not the engine's ({engine.tokenizer.path})")
    same_moe = (rc.num_layers, rc.num_experts, rc.top_k) == (ec.num_layers, ec.num_experts, ec.top_k)
    if header.ctx > ref.max_seq:
        raise MixtralTrtError(f"ctx={header.ctx}: longer than the reference engine's context of {ref.max_seq}")
    return ReferenceHeader(**{**header.__dict__, "layers": ec.num_layers if ref.routes and same_moe else 0,
                              "reference": ref.describe()})


def _batches(plan: WindowPlan, batch: int):
    ws = plan.windows
    return [ws[i:i + batch] for i in range(0, len(ws), batch)]


def _scored(logits: np.ndarray, windows, ctx: int) -> np.ndarray:
    """[B, C, X] per window -> [n, X] at each window's scored positions, in window order."""
    return np.concatenate([logits[b, w.positions(ctx)] for b, w in enumerate(windows)])


def _routing(router: list[np.ndarray] | None, windows, ctx: int, top_k: int) -> np.ndarray | None:
    """Per layer [B, C, E] router logits -> [n, L, k] expert sets at the scored positions."""
    if router is None:
        return None
    return np.stack([expert_sets(_scored(r, windows, ctx), top_k) for r in router], axis=1)


def _run(plan, ids, bos, scorer, ref_scorer, stored, header, acc, f, progress) -> None:
    ctx, vocab = plan.ctx, header.vocab_size
    limits = [scorer.max_batch] + ([ref_scorer.max_batch] if ref_scorer else [])
    batch = max(1, min(*limits, BATCH_BYTES // (ctx * vocab * 4)))
    done = 0
    with bar(progress, f"{len(plan.windows)} windows of {ctx} tokens ({plan.scored} scored)",
             len(plan.windows)) as advance:
        for windows in _batches(plan, batch):
            window_ids = np.stack([w.ids(ids, bos, ctx) for w in windows])  # [B, C]
            targets = np.concatenate([w.targets(ids, ctx) for w in windows])  # [n]
            n = len(targets)
            records = None
            if ref_scorer is not None:
                logits, router = ref_scorer.score(window_ids)
                routing = _routing(router, windows, ctx, header.top_k) if header.layers else None
                logits = _scored(logits, windows, ctx)
                records = np.concatenate([
                    reference_records(logits[a:a + ROWS], targets[a:a + ROWS],
                                      None if routing is None else routing[a:a + ROWS], header.dtype)
                    for a in range(0, n, ROWS)])
                del logits, router
                if f is not None:
                    f.write(records.tobytes())
            elif stored is not None:
                records = np.asarray(stored[done:done + n])
                if not np.array_equal(records["target"], targets):
                    raise MixtralTrtError(f"--reference-logits: its tokens differ from this text's at window "
                                          f"{windows[0].start}: damaged file")
            logits, router = scorer.score(window_ids)
            logits, routing = _scored(logits, windows, ctx), _routing(router, windows, ctx, header.top_k)
            for a in range(0, n, ROWS):
                acc.add(logits[a:a + ROWS], targets[a:a + ROWS], None if records is None else records[a:a + ROWS],
                        None if routing is None else routing[a:a + ROWS])
            done += n
            advance(len(windows))
