"""MoEGemmSwiGLUF8's ahead-of-time kernel variants: MoEGemmSwiGLUQ's kernel with BITS = F8_E4M3 (GROUP unused, 1)
(plugins/aot.py compiles them; its trt.py launches one)."""

from __future__ import annotations

from ..f8 import F8_BITS
from ..moe_gemm_swiglu_q.aot import variant as q_variant
from ..tiles import ALIGN_BLOCK, TACTICS, tile_for
from ..variant import KernelVariant


def variant(dtype: str, top_k: int, tactic: int, block_size: int = ALIGN_BLOCK) -> KernelVariant:
    base = q_variant(dtype, top_k, tactic, F8_BITS, 1, block_size)
    tile = tile_for(tactic, dtype, quantized=True, f8=True)  # F8_TILES where the Q kernels' tile spilled
    constexprs = {**base.constexprs, "BLOCK_M": tile.block_m, "BLOCK_N": tile.block_n, "BLOCK_K": tile.block_k}
    return KernelVariant("MoEGemmSwiGLUF8", base.kernel, base.folder, base.signature, constexprs,
                         tile.num_warps, tile.num_stages)


def defaults(dtypes: tuple[str, ...], top_k: int, num_experts: int) -> list[KernelVariant]:
    """The variants `plugins compile` writes for Mixtral's routing (plugins/aot.py, default_variants)."""
    return [variant(dtype, top_k, tactic) for dtype in dtypes for tactic in TACTICS]
