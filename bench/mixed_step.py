"""Mixed steps: the running rows' decode tokens and a joining prompt's chunk in ONE engine call (the Scheduler on a
`build --ragged` engine, runtime/mixed_step.py), against today's Scheduler on the same export without --ragged,
which runs a decode step and a separate call for the chunk (runtime/scheduler.py). On a preset's random `ort`
engine and the same export built --ragged: where the engine runs our CPU kernels, each layer's attention core
there is their RaggedAttention (exporter/lowering/ragged_attention.py; manifest backend_info["ragged_attention"]).

- `call_costs`: one step at a joining prompt's past of `past` tokens, per chunk size T (interleaved medians): the
  rows' decode step alone (their steady step; and the same rows packed, the mixed steps' steady step), decode step
  + chunk call (today), one padded call (every row padded to T new tokens, masked: what the canonical graph takes
  as it is, (B + 1) * T tokens) and one ragged call on the --ragged engine (the B + T tokens packed as batch 1,
  the cache packed once); where that engine has the op, the same ragged call on the canonical ragged graph too
  (write_ragged beside the plain engine: "canonical_ms"), interleaved with the others.
- `join_compare`: `rows` rows decode while a `long`-token prompt joins, the Scheduler itself (scheduler_load's
  join_once) on both engines, alternating (a shared machine's load then falls on both alike): the rows' gaps between
  tokens (p50 / p99 / max) against their steady step, the newcomer's time to first token, the load average.

    python -m mixtral_trt.bench.mixed_step --preset small --workdir bench-out [--pasts 256,1024,2000 --no-join]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.exporter.lowering.ragged import write_ragged
from mixtral_trt.exporter.lowering.ragged_attention import OP
from mixtral_trt.runtime.backends.ort import OrtRunner, custom_ops_hook
from mixtral_trt.runtime.kv_cache import KVCache
from mixtral_trt.runtime.ragged import PackedCache, RaggedRow

from .scheduler_load import emit, join_engine, join_once

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine


def canonical_runner(engine: Engine, workdir: Path, threads: int | None = None) -> OrtRunner:
    """The engine's graph with the canonical ragged attention (write_ragged), written once under `workdir` (weights
    hard-linked), opened with the engine's own copy of our CPU kernels' library where its MoE layers run on them."""
    path = workdir / f"{engine.path.name}-ragged-canonical" / "model.onnx"
    if not path.is_file():
        write_ragged(engine.path, path.parent)
    return OrtRunner(path, device=engine.runner.device, threads=threads,
                     session_options_hook=custom_ops_hook(engine.manifest, engine.path))


def with_threads(engine: Engine, threads: int) -> Engine:
    """`engine` with its runner reopened on `threads` intra-op threads (the Scheduler and its mixed steps call it)."""
    engine.runner = OrtRunner(engine.path / engine.manifest.model_file, device=engine.runner.device, threads=threads,
                              session_options_hook=custom_ops_hook(engine.manifest, engine.path))
    return engine


def has_op(ragged: Engine) -> bool:
    """Whether the --ragged engine's attention is our RaggedAttention (what its build recorded)."""
    return ragged.manifest.backend_info.get("ragged_attention") == OP


def call_costs(engine: Engine, ragged: Engine, past: int = 1024, chunks: tuple[int, ...] = (4, 16, 32, 64),
               rows: int = 3, row_past: int = 40, repeats: int = 7, canonical: OrtRunner | None = None,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Milliseconds per call (medians of `repeats` interleaved rounds) and each against the steady step; with
    `canonical` (canonical_runner's graph) its ragged calls too ("canonical_ms"). `clock`: wall time, or
    time.process_time (CPU time: with one intra-op thread, the work, whatever the load)."""
    rng = np.random.default_rng(0)
    vocab = engine.config.vocab_size
    _, running = engine.forward(rng.integers(3, vocab, (rows, row_past)))
    _, joining = engine.forward(rng.integers(3, vocab, (1, past)))
    running, joining = running.editable(), joining.editable()
    both = KVCache.concat([running, joining])  # the padded call's batch: rows, then the joining prompt
    kv = [running.row_kv(r) for r in range(rows)] + [joining.row_kv(0)]

    def padded(t: int) -> Callable[[], Any]:
        mask = np.concatenate([both.attention_mask, np.zeros((rows + 1, t), np.int64)], axis=1)  # [B + 1, P + T]
        mask[:rows, -1] = 1  # a decode row's token is its last new slot; the others are masked
        mask[rows, -t:] = 1
        positions = both.lengths[:, None] + np.zeros((1, t), np.int64)  # [B + 1, T]
        positions[rows] += np.arange(t)
        return lambda: engine.forward(rng.integers(3, vocab, (rows + 1, t)), both, mask, positions)

    def packed(t: int, runner: OrtRunner = ragged.runner) -> Callable[[], Any]:  # t = 0: the rows alone
        held = kv if t else kv[:rows]
        cache = PackedCache.from_rows([RaggedRow(k, v, [0]) for k, v in held])  # packed once, as the Scheduler holds it

        def call() -> Any:
            ids = [[int(i)] for i in rng.integers(3, vocab, rows)] + ([rng.integers(3, vocab, t).tolist()] if t else [])
            feeds, _, _ = cache.feeds(engine.contract, ids)
            return runner.run(feeds, ["logits"])
        return call

    calls: dict[str, Callable[[], Any]] = {"decode": lambda: engine.forward(rng.integers(3, vocab, (rows, 1)), running),
                                           "ragged0": packed(0)}
    for t in chunks:
        calls[f"chunk{t}"] = lambda t=t: engine.forward(rng.integers(3, vocab, (1, t)), joining)
        calls[f"padded{t}"], calls[f"ragged{t}"] = padded(t), packed(t)
        if canonical is not None:
            calls[f"canonical{t}"] = packed(t, canonical)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    steady = ms["decode"]
    out: dict[str, Any] = {"past": past, "rows": rows, "steady_step_ms": steady, "ragged_steady_ms": ms["ragged0"],
                           "ragged_steady_over_steady": ms["ragged0"] / steady, "chunks": []}
    for t in chunks:
        separate = steady + ms[f"chunk{t}"]
        out["chunks"].append({"chunk": t, "chunk_call_ms": ms[f"chunk{t}"], "separate_ms": separate,
                              "padded_ms": ms[f"padded{t}"], "ragged_ms": ms[f"ragged{t}"],
                              "separate_over_steady": separate / steady,
                              "padded_over_steady": ms[f"padded{t}"] / steady,
                              "ragged_over_steady": ms[f"ragged{t}"] / steady})
        if canonical is not None:
            out["chunks"][-1].update(canonical_ms=ms[f"canonical{t}"],
                                     canonical_over_steady=ms[f"canonical{t}"] / steady)
    return out


def join_compare(engine: Engine, ragged: Engine, chunks: tuple[int | str, ...] = (16, 32, 64),
                 today: tuple[int | str, ...] = (256, 16), rows: int = 3, long: int = 2048, repeats: int = 2,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Alternating runs of the Scheduler (scheduler_load's join_once): today's path on `engine` at each `today`
    prefill_chunk, its mixed steps on `ragged` (the same export built --ragged) at each of `chunks`; per
    configuration the best (lowest p99 ratio) run and, with `repeats` > 1, the median of each figure."""
    rng = np.random.default_rng(1)
    long_prompt = [1, *rng.integers(3, engine.config.vocab_size, long - 1).tolist()]
    configs = [("today", c) for c in today] + [("mixed", c) for c in chunks]
    runs: dict[tuple[str, int | str], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(repeats):
        for mode, chunk in configs:
            got = join_once(engine if mode == "today" else ragged, chunk, rows, long_prompt, rng)
            got = {k: v for k, v in got.items() if k != "chunk_sizes"}
            runs[(mode, chunk)].append({**got, "load": os.getloadavg()[0]})
            if progress is not None:
                progress({"mode": mode, "chunk": chunk, **runs[(mode, chunk)][-1]})
    results = []
    for (mode, chunk), measured in runs.items():
        best = min(measured, key=lambda r: r["p99_over_steady"])
        row = {"mode": mode, "chunk": chunk, **best, "runs": len(measured)}
        if len(measured) > 1:
            row["median"] = {k: float(np.median([r[k] for r in measured])) for k in best}
        results.append(row)
    return results


def _log(run: dict[str, Any]) -> None:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}), file=sys.stderr,
          flush=True)


def _chunks(text: str) -> tuple[int | str, ...]:
    return tuple(c if c == "auto" else int(c) for c in text.split(","))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--prefix", type=int, default=2048, help="the joining prompt's tokens")
    ap.add_argument("--chunks", default="8,16,32,64", help="the Scheduler's prefill_chunk values on the ragged engine")
    ap.add_argument("--today", default="256,16", help="today's Scheduler's prefill_chunk values to run beside them")
    ap.add_argument("--cost-chunks", default="4,16,32,64", help="chunk sizes of the per-call costs")
    ap.add_argument("--pasts", default=None, help="the joining prompt's pasts of the per-call costs (comma-"
                    "separated; default half of --prefix)")
    ap.add_argument("--no-join", action="store_true", help="per-call costs only")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of every session (default: all)")
    ap.add_argument("--cpu-time", action="store_true", help="per-call costs in CPU time (with --threads 1: the "
                    "work, whatever the machine's load)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    engine = join_engine(args.preset, args.workdir, args.prefix)
    ragged = join_engine(args.preset, args.workdir, args.prefix, ragged=True)
    if args.threads is not None:
        engine, ragged = with_threads(engine, args.threads), with_threads(ragged, args.threads)
    canonical = canonical_runner(engine, args.workdir, args.threads) if has_op(ragged) else None
    figures: dict[str, Any] = {"engine": str(engine.path), "ragged_engine": str(ragged.path),
                               "ragged_attention": ragged.manifest.backend_info.get("ragged_attention"),
                               "load_before": os.getloadavg(), "call_costs": []}
    pasts = [int(p) for p in args.pasts.split(",")] if args.pasts else [args.prefix // 2]
    for past in pasts:
        costs = call_costs(engine, ragged, past, tuple(int(c) for c in args.cost_chunks.split(",")),
                           repeats=args.repeats * 4 - 1, canonical=canonical,
                           clock=time.process_time if args.cpu_time else time.perf_counter)
        figures["call_costs"].append({**costs, "load": os.getloadavg()[0]})
        _log({"call_costs": figures["call_costs"][-1]})
    if not args.no_join:
        figures["join"] = join_compare(engine, ragged, _chunks(args.chunks), _chunks(args.today), long=args.prefix,
                                       repeats=args.repeats, progress=_log)
    emit(figures, args.out)


if __name__ == "__main__":
    main()
