"""MoEGemmDown's ahead-of-time kernel variants (plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..tiles import ALIGN_BLOCK, TACTICS, tile_for
from ..variant import TRITON_TYPES, KernelVariant


def variant(dtype: str, tactic: int, block_size: int = ALIGN_BLOCK, quantized: bool = False, zeros: bool = False
            ) -> KernelVariant:
    t, tile = f"*{TRITON_TYPES[dtype]}", tile_for(tactic, dtype, quantized, zeros)
    return KernelVariant("MoEGemmDown", "moe_gemm_down_kernel", "moe_gemm_down",
                         {"inter_ptr": t, "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
                          "weights_ptr": "*fp32", "w2_ptr": t, "H": "i32", "INTER": "i32", "P": "i32", "M_MAX": "i32",
                          "E": "i32", "y_ptr": "*fp32",
                          "ALIGN": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
                          "BLOCK_K": "constexpr", "IEEE": "constexpr"},
                         {"ALIGN": block_size, "BLOCK_M": tile.block_m, "BLOCK_N": tile.block_n,
                          "BLOCK_K": tile.block_k, "IEEE": dtype == "fp32"}, tile.num_warps, tile.num_stages)


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants)."""
    return [variant(dtype, tactic) for dtype in dtypes for tactic in TACTICS]
