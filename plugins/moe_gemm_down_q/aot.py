"""MoEGemmDownQ's ahead-of-time kernel variants (plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..moe_gemm_down.aot import variant as down_variant
from ..tiles import ALIGN_BLOCK, TACTICS
from ..variant import DEFAULT_QUANT, KernelVariant


def variant(dtype: str, tactic: int, bits: int, group: int, block_size: int = ALIGN_BLOCK, zeros: bool = False
            ) -> KernelVariant:
    base = down_variant(dtype, tactic, block_size, quantized=True, zeros=zeros)
    t = base.signature["inter_ptr"]
    ordered = {"inter_ptr": t, "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
               "weights_ptr": "*fp32", "codes_ptr": "*u8", "scales_ptr": t, "H": "i32", "INTER": "i32", "P": "i32",
               "M_MAX": "i32", "E": "i32", "y_ptr": "*fp32"}
    ordered.update({k: "constexpr" for k in (*base.constexprs, "BITS", "GROUP")})
    return KernelVariant("MoEGemmDownQ", "moe_gemm_down_q_kernel", "moe_gemm_down_q", ordered,
                         {**base.constexprs, "BITS": bits, "GROUP": group}, base.num_warps, base.num_stages)


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants)."""
    return [variant(dtype, tactic, bits, group) for dtype in dtypes for tactic in TACTICS
            for bits, group in DEFAULT_QUANT]
