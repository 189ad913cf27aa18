"""Host side of MoEGemmDown (and of MoEGemmDownQ, which only adds codes, scales, BITS and GROUP, and of
MoEGemmDownQZ, which adds zero points): grid over (row tiles of M_max, column tiles of H)."""

from __future__ import annotations

import torch

from mixtral_trt.common.dtypes import short_name

from ..f8 import F8_BITS
from ..interpreter import fp32_under_interpreter
from ..tiles import CPU_TACTIC, Tile, check, tile_for


def grid(m_max: int, hidden: int, tile: Tile) -> tuple[int, int]:
    return (-(-m_max // tile.block_m), -(-hidden // tile.block_n))


def run(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k: int, block_size: int,
        tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from .kernel import moe_gemm_down_kernel

    return launch(moe_gemm_down_kernel, inter, (sorted_pairs, block_experts, num_padded), weights, (w2,),
                  w2.shape[1], block_size, tactic, out)


def launch(kernel, inter, routing: tuple, weights, expert_weights: tuple, hidden: int, block_size: int, tactic: int,
           out: torch.Tensor | None, zeros: bool = False, **quant: int) -> torch.Tensor:
    """inter [M_max, I] -> y_pairs [T*k, H] float32 through `kernel`; `expert_weights` = (w2,) or (codes, scales)
    with `quant` = BITS, GROUP for the quantized kernel ((codes, scales, zeros) with `zeros`)."""
    (inter, *expert_weights), as_bf16 = fp32_under_interpreter(inter, *expert_weights)
    if as_bf16:  # the interpreter's bf16 tl.dot is wrong: compute in fp32 (the output is fp32 anyway)
        return launch(kernel, inter, routing, weights, tuple(expert_weights), hidden, block_size, tactic, out, zeros,
                      **quant)
    tile = tile_for(tactic, short_name(inter.dtype), quantized=bool(quant), zeros=zeros,
                    f8=quant.get("BITS") == F8_BITS)
    check(tile, block_size)
    p_total = weights.numel()
    m_max = routing[0].numel()
    y = out if out is not None else torch.empty(p_total, hidden, dtype=torch.float32, device=inter.device)
    kernel[grid(m_max, hidden, tile)](
        inter.contiguous(), *routing, weights.contiguous().float(), *(w.contiguous() for w in expert_weights),
        hidden, inter.shape[1], p_total, m_max, expert_weights[0].shape[0], y, ALIGN=block_size,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, IEEE=inter.dtype == torch.float32,
        num_warps=tile.num_warps, num_stages=tile.num_stages, **quant)
    return y
