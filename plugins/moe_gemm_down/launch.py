"""Host side of MoEGemmDown: grid over (row tiles of M_max, column tiles of H)."""

from __future__ import annotations

import torch

from ..tiles import CPU_TACTIC, Tile, check, tile_for


def grid(m_max: int, hidden: int, tile: Tile) -> tuple[int, int]:
    return (-(-m_max // tile.block_m), -(-hidden // tile.block_n))


def run(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k: int, block_size: int,
        tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from ..interpreter import fp32_under_interpreter
    from .kernel import moe_gemm_down_kernel

    (inter, w2), as_bf16 = fp32_under_interpreter(inter, w2)
    if as_bf16:  # the interpreter's bf16 tl.dot is wrong: compute in fp32 (the output is fp32 anyway)
        return run(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k, block_size, tactic, out)
    tile = tile_for(tactic, {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[inter.dtype])
    check(tile, block_size)
    p_total = weights.numel()
    hidden, inter_size = w2.shape[1], w2.shape[2]
    m_max = sorted_pairs.numel()
    y = out if out is not None else torch.empty(p_total, hidden, dtype=torch.float32, device=inter.device)
    moe_gemm_down_kernel[grid(m_max, hidden, tile)](
        inter.contiguous(), sorted_pairs, block_experts, num_padded, weights.contiguous().float(),
        w2.contiguous(), hidden, inter_size, p_total, y,
        ALIGN=block_size, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
        IEEE=inter.dtype == torch.float32, num_warps=tile.num_warps, num_stages=tile.num_stages)
    return y
