"""MoEGemmSwiGLUQZ's ahead-of-time kernel variants (plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..moe_gemm_swiglu_q.aot import variant as q_variant
from ..tiles import ALIGN_BLOCK, TACTICS
from ..variant import DEFAULT_QUANT_ZEROS, KernelVariant, insert_after


def variant(dtype: str, top_k: int, tactic: int, bits: int, group: int, ordered: bool,
            block_size: int = ALIGN_BLOCK) -> KernelVariant:
    base = q_variant(dtype, top_k, tactic, bits, group, block_size, zeros=True, ordered=ordered)
    signature = insert_after(base.signature, "scales_ptr", {"zeros_ptr": "*u8", "order_ptr": "*i32"})
    signature["ORDERED"] = "constexpr"
    return KernelVariant("MoEGemmSwiGLUQZ", "moe_gemm_swiglu_qz_kernel", "moe_gemm_swiglu_qz", signature,
                         {**base.constexprs, "ORDERED": bool(ordered)}, base.num_warps, base.num_stages)


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants): the published
    checkpoints' int4 in groups of 128, with and without act-order."""
    return [variant(dtype, top_k, tactic, bits, group, ordered) for dtype in dtypes for tactic in TACTICS
            for bits, group in DEFAULT_QUANT_ZEROS for ordered in (False, True)]
