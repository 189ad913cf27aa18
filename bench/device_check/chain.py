"""Phase 4: the `trt` lowering's plugin chain (router, align, SwiGLU GEMM, down GEMM, sum over k) as the model.

- The `small` preset in bf16 on the GPU (`tiny` on a CPU stand-in), once with the reference's MoE ops and once
  with the plugin chain behind them (a torch.library kernel for the device, `behind_reference_ops`): prompt
  logits and greedy tokens compared.
- One Mixtral-8x7B-shaped MoE layer (the chain on router logits and x) timed at T = 1, 8, 64, 512, 4096 x tactic x
  bf16 / int8 / int4, replayed from a CUDA graph where the chain captures, over rotating weight copies when one
  call touches less than 4x the L2 cache; each time against its floors: the expert bytes touched / the measured
  copy bandwidth, and the FLOPs / the measured bf16 matmul throughput (phase 1).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.plugins.tiles import CPU_TACTIC, TACTICS

from . import cases
from .measure import graphed, seconds
from .report import Phase

LAYER_T = (1, 8, 64, 512, 4096)
LOGITS_TOL = {"bf16": 3e-2, "fp32": 1e-4}  # prompt logits, plugin chain vs reference ops, max |Δ| / max |ref|
TARGETS = {"bf16_t1_bandwidth": 0.60, "bf16_t4096_matmul": 0.50, "int4_vs_bf16_t1": 2.5}


def tactic_for(tokens: int, device: str) -> int:
    """What TensorRT's timing would pick per profile: thin tiles for decode, wide for prefill."""
    if device != "cuda":
        return CPU_TACTIC
    return 1 if tokens <= 8 else (2 if tokens <= 64 else 3)


@contextlib.contextmanager
def behind_reference_ops(device: str) -> Iterator[list[int]]:
    """mixtral::moe_router / moe_experts run the plugin chain on `device` inside the block, which gets the token
    count of every experts call the chain ran."""
    import torch

    from mixtral_trt.plugins.moe_router.launch import run as router
    from mixtral_trt.plugins.pipeline import sparse_experts

    def moe_router(logits, top_k):
        return router(logits, top_k)

    def moe_experts(x, experts, weights, w13, w2):
        calls.append(x.shape[0])
        return sparse_experts(x, experts, weights, w13, w2, tactic=tactic_for(x.shape[0], device))

    lib = torch.library.Library("mixtral", "IMPL")
    key = "CUDA" if device == "cuda" else "CPU"
    calls: list[int] = []
    try:
        lib.impl("moe_router", moe_router, key)
        lib.impl("moe_experts", moe_experts, key)
        yield calls
    finally:
        lib._destroy()


def model_check(phase: Phase, device: str, steps: int) -> None:
    import itertools

    import torch

    from mixtral_trt.mixtral_ref.generate import greedy_steps
    from mixtral_trt.mixtral_ref.writer import init_random

    preset, dtype = ("small", "bf16") if device == "cuda" else ("tiny", "fp32")
    model = init_random(get_preset(preset), seed=0, dtype=cases.torch_dtype(dtype)).to(device)
    prompt = [1, *range(100, 131)]  # 32 tokens
    ids = torch.tensor([prompt], device=device)

    def run() -> tuple[torch.Tensor, list[int]]:
        with torch.inference_mode():
            logits = model.run(ids).logits[0].float()  # [T, V]
        tokens = [tok for tok, _ in itertools.islice(greedy_steps(model, prompt), steps)]
        return logits, tokens

    ref_logits, ref_tokens = run()
    with behind_reference_ops(device) as calls:
        logits, tokens = run()
    layers = get_preset(preset).num_layers
    phase.check("MoE layers run through the plugin chain", len(calls), f"{layers} x (1 + {steps}) forward passes",
                len(calls) == layers * (1 + steps))
    err = cases.rel_error(logits, ref_logits)
    same = sum(a == b for a, b in zip(tokens, ref_tokens, strict=True))
    phase.figure("model", {"preset": preset, "dtype": dtype, "prompt_tokens": len(prompt),
                           "logits_max_rel": err, "greedy_match": f"{same}/{steps}",
                           "first_divergence": next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens,
                                                                                        strict=True)) if a != b),
                                                    None)})
    phase.check(f"{preset} {dtype} prompt logits, plugin chain vs reference ops", err, f"rel < {LOGITS_TOL[dtype]:g}",
                err < LOGITS_TOL[dtype])
    phase.check(f"{preset} {dtype} greedy tokens", same, f"{steps}/{steps}", same == steps)
    phase.ran(f"{preset} preset {dtype}: prompt logits and {steps} greedy tokens through the plugin chain")


def _layer_weights(shape: cases.Shape, quant: str | None, device: str) -> tuple[tuple, int]:
    """The expert operands and bytes per expert."""
    if quant is None:
        w13, w2 = cases.float_experts(shape, "bf16", device)
        ops = (w13, w2)
    else:
        bits, group = cases.QUANTS[quant], cases.group_for(quant)
        ops = (*cases.random_codes(shape.experts, 2 * shape.inter, shape.hidden, bits, group, "bf16", device),
               *cases.random_codes(shape.experts, shape.hidden, shape.inter, bits, group, "bf16", device, seed=3))
    per_expert = sum(o.numel() * o.element_size() for o in ops) // shape.experts
    return ops, per_expert


def _chain(router, logits, x, weights: tuple, quant: str | None, top_k: int, tactic: int):
    """The plugin chain on fixed inputs: router -> align -> SwiGLU GEMM -> down GEMM -> sum over k."""
    from mixtral_trt.plugins.pipeline import sparse_experts, sparse_experts_q

    def run():
        routing_weights, experts = router(logits, top_k)
        if quant is None:
            return sparse_experts(x, experts, routing_weights, *weights, tactic=tactic)
        bits, group = cases.QUANTS[quant], cases.group_for(quant)
        return sparse_experts_q(x, experts, routing_weights, *weights, bits, group, tactic=tactic)

    return run


def _time_rotating(chains: list, device: str) -> tuple[float, bool]:
    """Seconds per call, the calls going round the chains (one per weight copy), each replayed from a CUDA graph
    where it captures; and whether all did."""
    replays = [graphed(c) if device == "cuda" else None for c in chains]
    calls = [r or c for r, c in zip(replays, chains, strict=True)]
    turn = [0]

    def run_next():
        turn[0] += 1
        return calls[turn[0] % len(calls)]()

    measured = seconds(run_next, device, repeats=20 if device == "cuda" else 1, warmup=1)
    return measured, all(r is not None for r in replays)


def layer_timing(phase: Phase, device: str, ceilings: dict[str, float]) -> None:
    import torch

    from mixtral_trt.plugins.moe_router.launch import run as router
    shape = cases.SHAPES["mixtral-8x7b" if device == "cuda" else "tiny"]
    token_counts = LAYER_T if device == "cuda" else (8,)
    tactics = list(TACTICS) if device == "cuda" else [CPU_TACTIC]
    quants = (None, "int8", "int4")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size if device == "cuda" else 0
    rows: list[dict[str, Any]] = []
    for quant in quants:
        if phase.out_of_time(f"MoE layer {quant or 'bf16'}"):
            continue
        ops, per_expert = _layer_weights(shape, quant, device)
        for t in token_counts:
            logits = cases.router_logits(t, shape.experts, device).to(torch.bfloat16)
            x = torch.randn(t, shape.hidden, device=device).to(torch.bfloat16)
            experts_used = int(torch.unique(router(logits, shape.top_k)[1]).numel())
            touched = experts_used * per_expert
            copies = max(1, min(4, math.ceil(4 * l2 / touched))) if touched < 4 * l2 else 1
            weights = [ops] + [tuple(o.clone() for o in ops) for _ in range(copies - 1)]
            flops = 2 * t * shape.top_k * 3 * shape.hidden * shape.inter
            for tactic in tactics:
                if phase.out_of_time(f"MoE layer {quant or 'bf16'} T={t} tactic {tactic}"):
                    continue

                chains = [_chain(router, logits, x, w, quant, shape.top_k, tactic) for w in weights]
                measured, graphs = _time_rotating(chains, device)
                floor_bw = touched / ceilings["copy_bytes_per_s"]
                floor_mm = flops / ceilings["matmul_flop_per_s"]
                rows.append({"weights": quant or "bf16", "T": t, "tactic": tactic, "ms": round(measured * 1e3, 4),
                             "cuda_graph": graphs, "weight_copies": copies,
                             "experts_touched": experts_used, "bytes_touched": touched, "flops": flops,
                             "bandwidth_floor_ms": round(floor_bw * 1e3, 4),
                             "matmul_floor_ms": round(floor_mm * 1e3, 4),
                             "fraction_of_bandwidth_floor": round(floor_bw / measured, 3),
                             "fraction_of_matmul_floor": round(floor_mm / measured, 3)})
                del chains
            del weights
        del ops
        if device == "cuda":
            torch.cuda.empty_cache()
        phase.ran(f"MoE layer {shape.name} {quant or 'bf16'} experts: T {list(token_counts)} x tactics {tactics}")
    phase.figure("moe_layer", rows)
    if device == "cuda":
        _targets(phase, rows)
    else:
        phase.skip("targets against the floors", "CPU stand-in: the interpreter's times say nothing of a GPU")


def _best(rows: list[dict[str, Any]], weights: str, t: int) -> dict[str, Any] | None:
    found = [r for r in rows if r["weights"] == weights and r["T"] == t]
    return min(found, key=lambda r: r["ms"]) if found else None


def _targets(phase: Phase, rows: list[dict[str, Any]]) -> None:
    b1, b4096, i1 = _best(rows, "bf16", 1), _best(rows, "bf16", 4096), _best(rows, "int4", 1)
    if b1:
        v = b1["fraction_of_bandwidth_floor"]
        phase.check("8x7B layer bf16 T=1 (best tactic): fraction of the bandwidth floor", v,
                    f">= {TARGETS['bf16_t1_bandwidth']}", v >= TARGETS["bf16_t1_bandwidth"], tactic=b1["tactic"])
    if b4096:
        v = b4096["fraction_of_matmul_floor"]
        phase.check("8x7B layer bf16 T=4096 (best tactic): fraction of the matmul floor", v,
                    f">= {TARGETS['bf16_t4096_matmul']}", v >= TARGETS["bf16_t4096_matmul"], tactic=b4096["tactic"])
    if b1 and i1:
        v = round(b1["ms"] / i1["ms"], 2)
        phase.check("8x7B layer T=1: int4 speed-up over bf16 (best tactics)", v, f">= {TARGETS['int4_vs_bf16_t1']}",
                    v >= TARGETS["int4_vs_bf16_t1"])


def run_phase(phase: Phase, device: str, ceilings: dict[str, float] | None) -> None:
    model_check(phase, device, steps=32 if device == "cuda" else 4)
    if ceilings is None:
        phase.skip("MoE layer timing", "phase 1 measured no ceilings")
        return
    layer_timing(phase, device, ceilings)
