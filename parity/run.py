"""Run an engine and the reference on the same prompts and judge parity.

Prompts: deterministic random token sequences of several lengths, one real [INST] chat prompt when a
tokenizer is available, and one left-padded batch (masking and positions). Only real (non-padding)
positions are compared. Greedy continuations are compared token by token.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from mixtral_trt import runtime
from mixtral_trt.chat.tokenizer import Tokenizer
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import step
from mixtral_trt.mixtral_ref.checkpoint import input_orders, load_model
from mixtral_trt.mixtral_ref.generate import greedy_steps as reference_greedy
from mixtral_trt.mixtral_ref.kv_quant import float_kv, int8_kv_
from mixtral_trt.mixtral_ref.model import Mixtral
from mixtral_trt.mixtral_ref.quantized import (
    dense_of,
    fake_quantize_,
    round_experts_,
    round_linears_,
    scheme_of,
    stored_of,
)
from mixtral_trt.runtime.engine import Engine

from .metrics import greedy_match, tensor_error, topk_flips
from .report import LayerParity, ParityReport
from .tolerance import INT8_ACTIVATIONS, TOLERANCES, Tolerance

PROMPT_LENGTHS = (5, 17, 40)
CHAT = [{"role": "user", "content": "Explain mixture-of-experts routing in one sentence, s'il vous plaît."}]


def default_prompts(vocab: int, max_len: int, seed: int = 0, tokenizer=None) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, vocab, n).tolist() for n in PROMPT_LENGTHS if n < max_len]
    if tokenizer is not None and tokenizer.vocab_size == vocab:
        chat = tokenizer.encode_chat(CHAT)
        if len(chat) < max_len:
            prompts.append(chat)
    return prompts


def _left_pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = max(len(r) for r in rows)
    ids = np.zeros((len(rows), t), np.int64)
    mask = np.zeros((len(rows), t), np.int64)
    for b, r in enumerate(rows):
        ids[b, t - len(r):], mask[b, t - len(r):] = r, 1
    return ids, mask, np.maximum(mask.cumsum(-1) - 1, 0)


@torch.inference_mode()
def _collect(engine: Engine, reference: Mixtral, ids, mask, pos, debug: bool):
    """(engine outputs, reference outputs) as name -> [N, ...] over the real positions."""
    roles = ("logits", "hidden", "router_logits") if debug else ("logits",)
    got, _ = engine.forward(ids, attention_mask=mask, position_ids=pos, outputs=roles)
    ref = reference.run(torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(mask))
    real = mask.reshape(-1).astype(bool)  # [B*T]
    c = engine.contract
    out_e = {"logits": got["logits"].reshape(real.size, -1)[real]}
    out_r = {"logits": ref.logits.float().reshape(real.size, -1).numpy()[real]}
    if debug:
        for i, (h, r) in enumerate(zip(c.names("hidden"), c.names("router_logits"), strict=True)):
            out_e[h] = np.asarray(got[h], np.float32).reshape(real.size, -1)[real]
            out_e[r] = np.asarray(got[r], np.float32).reshape(real.size, -1)[real]
            out_r[h] = ref.hidden_states[i].float().reshape(real.size, -1).numpy()[real]
            out_r[r] = ref.router_logits[i].float().reshape(real.size, -1).numpy()[real]
    return out_e, out_r


def run_parity(
    engine: Engine,
    reference: Mixtral,
    prompts: list[list[int]] | None = None,
    greedy_steps: int = 16,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    tokenizer=None,
) -> ParityReport:
    """Compare `engine` with the float32 `reference` and judge it against the engine dtype's tolerance."""
    tol = tolerance or TOLERANCES[engine.dtype]
    cfg = engine.config
    limit = engine.max_seq - greedy_steps
    prompts = prompts or default_prompts(cfg.vocab_size, limit, seed, tokenizer)
    # per-layer outputs exist when the export asked for them (--debug-outputs) and a TensorRT build kept them
    debug = engine.contract.debug_outputs and bool(engine.manifest.backend_info.get("debug_outputs", True))
    batches = [_left_pad([p]) for p in prompts]
    if len(prompts) >= 2 and engine.max_batch >= 2:
        batches.append(_left_pad(prompts[:2]))  # different lengths: padding, masks, positions
    pairs = [_collect(engine, reference, *b, debug) for b in batches]
    got = {k: np.concatenate([p[0][k] for p in pairs]) for k in pairs[0][0]}
    ref = {k: np.concatenate([p[1][k] for p in pairs]) for k in pairs[0][1]}

    failures = []
    logits = tensor_error(got["logits"], ref["logits"], tol.logits_rel, "logits")
    logit_tie = tol.logits_rel * float(np.abs(ref["logits"]).max())
    top1 = topk_flips(got["logits"], ref["logits"], 1, logit_tie)
    if not logits.passed:
        failures.append(f"logits relative error {logits.max_rel:.2e} > {tol.logits_rel:.0e}")
    if top1.unexplained:
        failures.append(f"top-1 token differs at {top1.unexplained} of {top1.positions} positions with a clear "
                        "reference margin")

    layers = []
    for i in range(cfg.num_layers):
        if not debug:
            layers.append(LayerParity(i, None, None, None))
            continue
        h, r = f"hidden.{i}", f"router_logits.{i}"
        hidden = tensor_error(got[h], ref[h], tol.hidden_rel, h)
        router = tensor_error(got[r], ref[r], tol.router_rel, r)
        flips = topk_flips(got[r], ref[r], cfg.top_k, tol.router_rel * float(np.abs(ref[r]).max()))
        layers.append(LayerParity(i, hidden, router, flips))
        if not hidden.passed:
            failures.append(f"layer {i}: hidden-state relative error {hidden.max_rel:.2e} > {tol.hidden_rel:.0e}")
        if flips.unexplained:
            failures.append(f"layer {i}: {flips.unexplained} of {flips.positions} tokens routed to other experts "
                            "with a clear router margin")

    greedy = []
    for p in prompts[:2]:
        steps = list(itertools.islice(reference_greedy(reference, p), greedy_steps))
        ref_tokens, ref_logits = [t for t, _ in steps], [x.numpy() for _, x in steps]
        tie = tol.logits_rel * max(float(np.abs(x).max()) for x in ref_logits)
        tokens = engine.generate(p, max_new_tokens=greedy_steps, ignore_eos=True).token_ids
        match = greedy_match(tokens, ref_tokens, ref_logits, tie)
        greedy.append(match)
        if not match.explained:
            failures.append(f"greedy decoding of a {len(p)}-token prompt diverges at step {match.matched} "
                            f"where the reference margin is {match.divergence_margin:.3g} (> tolerance)")
    return ParityReport(engine.backend, engine.dtype, str(engine.path), tol, logits, top1, layers, greedy,
                        [len(p) for p in prompts], failures)


def check_engine(engine_dir: str | Path, checkpoint: str | Path, greedy_steps: int = 16, seed: int = 0,
                 progress=None) -> ParityReport:
    """Load the engine and the float32 reference from `checkpoint`, then `run_parity`."""
    with step(progress, "load engine"):
        engine = runtime.load(engine_dir)
    with step(progress, "load reference (fp32)"):
        reference = load_model(checkpoint, dtype=torch.float32)
    if reference.config != engine.config:
        raise MixtralTrtError(f"{checkpoint}: its config differs from the engine's ({engine_dir}): "
                              "not the checkpoint this engine was exported from")
    original, tolerance = None, None
    scheme = scheme_of(engine.contract)
    activations_block = engine.manifest.backend_info.get("int8_activations_block")
    stored = stored_of(engine.contract)
    if scheme is not None:  # judge the kernels against the same quantized weights; report the rest
        # (a quantized checkpoint's codes kept by the export: the reference is already its dequantization)
        original = reference if stored is None else None
        orders = input_orders(checkpoint) if activations_block and stored is not None else None
        reference = fake_quantize_(load_model(checkpoint, dtype=torch.float32), scheme, engine.dtype,
                                   dense=dense_of(engine.contract),
                                   activations_block=activations_block, stored=stored, input_orders=orders)
        if activations_block:
            tolerance = max(TOLERANCES[engine.dtype], INT8_ACTIVATIONS, key=lambda t: t.logits_rel)
    expert_weights = engine.manifest.backend_info.get("expert_weights")
    if expert_weights and scheme is None:  # experts stored narrower than the graph computes (--expert-dtype)
        original = reference
        reference = round_experts_(load_model(checkpoint, dtype=torch.float32), expert_weights)
        linear_weights = engine.manifest.backend_info.get("linear_weights")  # same dtype as the experts
        if linear_weights:  # our CPU linears storing the float LM head / projections narrower too
            kinds = tuple(engine.manifest.backend_info.get("cpu_kernels", {}).get("linears", ()))
            reference = round_linears_(reference, linear_weights, kinds)
    kv_int8 = engine.contract.kv_cache == "int8"
    if kv_int8:  # the reference rounds its cache as the engine does (mixtral_ref/kv_quant.py)
        int8_kv_(reference)
    try:
        tokenizer = Tokenizer.from_checkpoint(checkpoint)
    except MixtralTrtError:
        tokenizer = None
    with step(progress, f"run prompts and {greedy_steps}-step greedy decoding"):
        report = run_parity(engine, reference, greedy_steps=greedy_steps, seed=seed, tokenizer=tokenizer,
                            tolerance=tolerance)
    if original is not None:
        narrowed = "experts+linears" if engine.manifest.backend_info.get("linear_weights") else "experts"
        report.quantization = {"scheme": scheme.name if scheme else f"{narrowed}-{expert_weights}",
                               "logits_rel_vs_unquantized": quantization_error(
            engine, original, report.prompts, seed, tokenizer)}
    if kv_int8:
        with float_kv(reference):
            report.kv_cache = {"kind": "int8", "logits_rel_vs_float_kv": quantization_error(
                engine, reference, report.prompts, seed, tokenizer)}
    return report


@torch.inference_mode()
def quantization_error(engine: Engine, original: Mixtral, lengths: list[int], seed: int, tokenizer) -> float:
    """Logits relative error of the engine against the unquantized model (what quantization costs)."""
    prompts = default_prompts(engine.config.vocab_size, engine.max_seq, seed, tokenizer)
    worst = 0.0
    for p in prompts:
        ref = original(torch.tensor([p])).float().numpy()
        got = engine.logits(np.asarray([p]))
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    return worst
