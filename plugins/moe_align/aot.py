"""MoEAlign's ahead-of-time kernel variants (plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..tiles import ALIGN_BLOCK
from ..variant import KernelVariant


def variant(num_experts: int, block_size: int = ALIGN_BLOCK) -> KernelVariant:
    from .launch import BLOCK_P, block_e

    return KernelVariant("MoEAlign", "moe_align_kernel", "moe_align",
                         {"experts_ptr": "*i32", "P": "i32", "E": "i32", "M_MAX": "i32", "NUM_BLOCKS": "i32",
                          "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
                          "BLOCK": "constexpr", "BLOCK_P": "constexpr", "BLOCK_E": "constexpr"},
                         {"BLOCK": block_size, "BLOCK_P": BLOCK_P, "BLOCK_E": block_e(num_experts)})


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants)."""
    return [variant(num_experts)]
