"""MoEGemmDownQZ's ahead-of-time kernel variants (plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..moe_gemm_down_q.aot import variant as q_variant
from ..tiles import ALIGN_BLOCK, TACTICS
from ..variant import DEFAULT_QUANT_ZEROS, KernelVariant, insert_after


def variant(dtype: str, tactic: int, bits: int, group: int, block_size: int = ALIGN_BLOCK) -> KernelVariant:
    base = q_variant(dtype, tactic, bits, group, block_size, zeros=True)
    signature = insert_after(base.signature, "scales_ptr", {"zeros_ptr": "*u8"})
    return KernelVariant("MoEGemmDownQZ", "moe_gemm_down_qz_kernel", "moe_gemm_down_qz", signature,
                         base.constexprs, base.num_warps, base.num_stages)


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants): the published
    checkpoints' int4 in groups of 128."""
    return [variant(dtype, tactic, bits, group) for dtype in dtypes for tactic in TACTICS
            for bits, group in DEFAULT_QUANT_ZEROS]
