"""Host side of MoEGemmSwiGLU (and of MoEGemmSwiGLUQ, which only adds codes, scales, BITS and GROUP, and of
MoEGemmSwiGLUQZ, which adds zero points, the input order and ORDERED): grid over (row tiles of M_max, column tiles
of I)."""

from __future__ import annotations

import torch

from mixtral_trt.common.dtypes import short_name

from ..f8 import F8_BITS
from ..interpreter import fp32_under_interpreter
from ..tiles import CPU_TACTIC, Tile, check, tile_for


def grid(m_max: int, inter: int, tile: Tile) -> tuple[int, int]:
    return (-(-m_max // tile.block_m), -(-inter // tile.block_n))


def run(x, sorted_pairs, block_experts, num_padded, w13, top_k: int, block_size: int,
        tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from .kernel import moe_gemm_swiglu_kernel

    return launch(moe_gemm_swiglu_kernel, x, (sorted_pairs, block_experts, num_padded), (w13,), w13.shape[1] // 2,
                  top_k, block_size, tactic, out)


def launch(kernel, x, routing: tuple, weights: tuple, inter_size: int, top_k: int, block_size: int, tactic: int,
           out: torch.Tensor | None, zeros: bool = False, **quant: int) -> torch.Tensor:
    """x [T, H] -> inter [M_max, I] through `kernel`; `weights` = (w13,) or (codes, scales) with `quant` =
    BITS, GROUP for the quantized kernel ((codes, scales, zeros, order) and ORDERED with `zeros`)."""
    (x, *weights), as_bf16 = fp32_under_interpreter(x, *weights)
    if as_bf16:  # the interpreter's bf16 tl.dot is wrong: compute in fp32, round the result
        result = launch(kernel, x, routing, tuple(weights), inter_size, top_k, block_size, tactic, None, zeros,
                        **quant)
        return result.to(torch.bfloat16) if out is None else out.copy_(result)
    tile = tile_for(tactic, short_name(x.dtype), quantized=bool(quant), zeros=zeros, ordered=bool(quant.get("ORDERED")),
                    f8=quant.get("BITS") == F8_BITS)
    check(tile, block_size)
    t, h = x.shape
    m_max = routing[0].numel()
    # padding rows stay unwritten, as in TensorRT's output buffer
    inter = out if out is not None else torch.empty(m_max, inter_size, dtype=x.dtype, device=x.device)
    kernel[grid(m_max, inter_size, tile)](
        x.contiguous(), *routing, *(w.contiguous() for w in weights), h, inter_size, t * top_k, m_max,
        weights[0].shape[0], inter,
        TOP_K=top_k, ALIGN=block_size, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
        IEEE=x.dtype == torch.float32, num_warps=tile.num_warps, num_stages=tile.num_stages, **quant)
    return inter
