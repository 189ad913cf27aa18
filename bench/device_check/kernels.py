"""Phase 2: every plugin kernel and variant (fp32 / fp16 / bf16 x float / int8 / int4 experts, every GEMM tactic),
compiled by Triton for this GPU (under the Triton interpreter on a CPU stand-in), against its reference, every
output pre-filled with NaN (integers: FILL_INT) so that an entry the kernel does not write fails the check.

Order of work (the phase's budget may stop it): per shape, the token counts in CHECK_T order, so the decode and
prefill extremes of the first shape come first."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mixtral_trt.plugins.tiles import ALIGN_BLOCK, TACTICS

from . import cases
from .cases import QUANTS, REL_TOL, Shape
from .report import Phase

GPU_T = (1, 4096, 8, 512)
CPU_T = (5,)  # the interpreter runs each program in Python: one small T


@dataclass
class Routing:
    logits: Any
    weights: Any
    experts: Any
    sorted_pairs: Any
    block_experts: Any
    num_padded: Any


def check_routing(phase: Phase, shape: Shape, t: int, device: str, tag: str) -> Routing | None:
    """Router (each dtype) and align kernels against their references; the fp32 routing for the GEMMs."""
    import torch

    from mixtral_trt.plugins.moe_align.launch import run as align
    from mixtral_trt.plugins.moe_align.launch import sizes
    from mixtral_trt.plugins.moe_router.launch import run as router

    logits = cases.router_logits(t, shape.experts, device)
    ref_w, ref_e = cases.router_reference(logits, shape.top_k)
    result = None
    for dtype in REL_TOL:
        lg = logits.to(cases.torch_dtype(dtype))
        rw, re_ = cases.router_reference(lg, shape.top_k)
        out = (torch.full((t, shape.top_k), float("nan"), device=device),
               torch.full((t, shape.top_k), cases.FILL_INT, dtype=torch.int32, device=device))
        weights, experts = router(lg, shape.top_k, out=out)
        err = cases.rel_error(weights, rw)
        phase.check(f"{tag} MoERouter {dtype}", err, "experts equal, weights rel < 1e-6",
                    bool(torch.equal(experts, re_)) and err < 1e-6)
        if dtype == "fp32":
            result = (weights, experts)
    weights, experts = result
    m_max, blocks = sizes(t, shape.top_k, shape.experts, ALIGN_BLOCK)
    out = (torch.full((m_max,), cases.FILL_INT, dtype=torch.int32, device=device),
           torch.full((blocks,), cases.FILL_INT, dtype=torch.int32, device=device),
           torch.full((1,), cases.FILL_INT, dtype=torch.int32, device=device))
    got = align(experts, shape.experts, ALIGN_BLOCK, out=out)
    ref = cases.align_reference(experts, shape.experts, ALIGN_BLOCK)
    equal = all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))
    phase.check(f"{tag} MoEAlign", int(not equal), "equal to the reference (every entry written)", equal)
    del ref_w, ref_e
    return Routing(logits, weights, experts, *ref)


def expert_weights(shape: Shape, dtype: str, quant: str | None, device: str) -> tuple[tuple, tuple, Any, Any]:
    """(w13 operands, w2 operands, w13 as the reference sees it, w2 likewise)."""
    if quant is None:
        w13, w2 = cases.float_experts(shape, dtype, device)
        return (w13,), (w2,), w13, w2
    bits, group = QUANTS[quant], cases.group_for(quant)
    c13, s13 = cases.random_codes(shape.experts, 2 * shape.inter, shape.hidden, bits, group, dtype, device)
    c2, s2 = cases.random_codes(shape.experts, shape.hidden, shape.inter, bits, group, dtype, device, seed=3)
    return (c13, s13), (c2, s2), cases.dequantize(c13, s13, bits, dtype), cases.dequantize(c2, s2, bits, dtype)


def run_gemms(x, routing: Routing, w13_ops: tuple, w2_ops: tuple, ref_inter, top_k: int, quant: str | None,
              tactic: int):
    """The two GEMM kernels of a variant into NaN-filled outputs; the down GEMM reads the reference's inter."""
    import torch

    from mixtral_trt.plugins.moe_gemm_down.launch import run as down
    from mixtral_trt.plugins.moe_gemm_down_q.launch import run as down_q
    from mixtral_trt.plugins.moe_gemm_swiglu.launch import run as swiglu
    from mixtral_trt.plugins.moe_gemm_swiglu_q.launch import run as swiglu_q

    route = (routing.sorted_pairs, routing.block_experts, routing.num_padded)
    inter = torch.full_like(ref_inter, float("nan"))
    y = torch.full((routing.weights.numel(), w2_ops[0].shape[1]), float("nan"), device=x.device)
    if quant is None:
        swiglu(x, *route, *w13_ops, top_k, ALIGN_BLOCK, tactic, out=inter)
        down(ref_inter, *route, routing.weights, *w2_ops, top_k, ALIGN_BLOCK, tactic, out=y)
    else:
        bits, group = QUANTS[quant], cases.group_for(quant)
        swiglu_q(x, *route, *w13_ops, top_k, ALIGN_BLOCK, bits, group, tactic, out=inter)
        down_q(ref_inter, *route, routing.weights, *w2_ops, top_k, ALIGN_BLOCK, bits, group, tactic, out=y)
    return inter, y


def variants() -> Iterator[tuple[str, str | None]]:
    for quant in QUANTS:
        for dtype in REL_TOL:
            yield dtype, quant


def run_phase(phase: Phase, device: str) -> None:
    import torch

    shapes = [cases.SHAPES["mixtral-8x7b"], cases.SHAPES["mixtral-8x22b"]] if device == "cuda" else \
        [cases.SHAPES["tiny"]]
    token_counts = GPU_T if device == "cuda" else CPU_T
    phase.figure("shapes", [vars(s) for s in shapes])
    phase.figure("tolerances", {"relative": REL_TOL, "router_weights": 1e-6, "align": "exact"})
    errors: dict[str, float] = {}
    for shape in shapes:
        for t in token_counts:
            tag = f"{shape.name} T={t}"
            if phase.out_of_time(f"{tag}: every kernel"):
                continue
            routing = check_routing(phase, shape, t, device, tag)
            for dtype, quant in variants():
                what = f"{tag} {dtype} {quant or 'float'}"
                if phase.out_of_time(f"{what}: GEMMs, tactics {list(TACTICS)}"):
                    continue
                x = torch.randn(t, shape.hidden, device=device, generator=torch.Generator(device=device)
                                .manual_seed(4)).to(cases.torch_dtype(dtype))
                w13_ops, w2_ops, w13, w2 = expert_weights(shape, dtype, quant, device)
                route = (routing.sorted_pairs, routing.block_experts, routing.num_padded)
                ref_inter = cases.swiglu_reference(x, *route, w13, shape.top_k, ALIGN_BLOCK)
                ref_y = cases.down_reference(ref_inter, *route, routing.weights, w2, ALIGN_BLOCK)
                rows = cases.real_rows(routing.sorted_pairs, routing.num_padded, t * shape.top_k)
                for tactic in TACTICS:
                    inter, y = run_gemms(x, routing, w13_ops, w2_ops, ref_inter, shape.top_k, quant, tactic)
                    q = "Q" if quant else ""
                    for name, got, ref in ((f"MoEGemmSwiGLU{q}", inter[rows], ref_inter[rows]),
                                           (f"MoEGemmDown{q}", y, ref_y)):
                        err = cases.rel_error(got, ref)
                        key = f"{what} {name} tactic {tactic}"
                        errors[key] = err
                        phase.check(key, err, f"rel < {REL_TOL[dtype]:g}", err < REL_TOL[dtype])
                phase.ran(what)
                del x, w13_ops, w2_ops, w13, w2, ref_inter, ref_y
                if device == "cuda":
                    torch.cuda.empty_cache()
    worst = {}
    for key, err in errors.items():
        dtype = key.split()[2]
        worst[dtype] = max(worst.get(dtype, 0.0), err)
    phase.figure("worst_rel_error", worst)
    phase.figure("gemm_checks", len(errors))
    if device == "cuda":
        check_jit_spills(phase)
    else:
        phase.skip("registers and spills of the compiled GEMMs", "the interpreter compiles nothing (on a CPU: "
                   "`make plugins-spills`, ptxas -v of the AOT PTX)")


def check_jit_spills(phase: Phase) -> None:
    """Registers and spill bytes per thread of every GEMM variant Triton compiled for this GPU above, as the driver
    loaded it: none may spill (plugins/README.md, "Registers and spills")."""
    from mixtral_trt.plugins.moe_gemm_down.kernel import moe_gemm_down_kernel
    from mixtral_trt.plugins.moe_gemm_down_q.kernel import moe_gemm_down_q_kernel
    from mixtral_trt.plugins.moe_gemm_swiglu.kernel import moe_gemm_swiglu_kernel
    from mixtral_trt.plugins.moe_gemm_swiglu_q.kernel import moe_gemm_swiglu_q_kernel
    from mixtral_trt.plugins.spills import jit_usage

    rows = [r for fn in (moe_gemm_swiglu_kernel, moe_gemm_down_kernel, moe_gemm_swiglu_q_kernel,
                         moe_gemm_down_q_kernel) for r in jit_usage(fn)]
    if not rows:
        phase.skip("registers and spills of the compiled GEMMs", "this Triton's JIT cache has no loaded kernels "
                   "where plugins/spills.py looks (device_caches)")
        return
    phase.figure("gemm_registers", rows)
    spilling = sorted((r for r in rows if r["spills"]), key=lambda r: -r["spills"])
    phase.check("GEMM variants that spill registers (JIT, this GPU)", len(spilling), "0", not spilling,
                worst=spilling[:5], variants=len(rows))
