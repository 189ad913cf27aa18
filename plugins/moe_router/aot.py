"""MoERouter's ahead-of-time kernel variants (plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..variant import TRITON_TYPES, KernelVariant


def variant(dtype: str, top_k: int, num_experts: int) -> KernelVariant:
    from .launch import BLOCK_T, block_e

    return KernelVariant("MoERouter", "moe_router_kernel", "moe_router",
                         {"logits_ptr": f"*{TRITON_TYPES[dtype]}", "T": "i32", "E": "i32", "weights_ptr": "*fp32",
                          "experts_ptr": "*i32", "K": "constexpr", "BLOCK_T": "constexpr", "BLOCK_E": "constexpr"},
                         {"K": top_k, "BLOCK_T": BLOCK_T, "BLOCK_E": block_e(num_experts)})


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants)."""
    return [variant(dtype, top_k, num_experts) for dtype in dtypes]
