"""Host side of MoEGemmSwiGLU: grid over (row tiles of M_max, column tiles of I)."""

from __future__ import annotations

import torch

from ..tiles import CPU_TACTIC, Tile, check, tile_for


def grid(m_max: int, inter: int, tile: Tile) -> tuple[int, int]:
    return (-(-m_max // tile.block_m), -(-inter // tile.block_n))


def run(x, sorted_pairs, block_experts, num_padded, w13, top_k: int, block_size: int,
        tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from ..interpreter import fp32_under_interpreter
    from .kernel import moe_gemm_swiglu_kernel

    (x, w13), as_bf16 = fp32_under_interpreter(x, w13)
    if as_bf16:  # the interpreter's bf16 tl.dot is wrong: compute in fp32, round the result
        result = run(x, sorted_pairs, block_experts, num_padded, w13, top_k, block_size, tactic).to(torch.bfloat16)
        return result if out is None else out.copy_(result)
    tile = tile_for(tactic, {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[x.dtype])
    check(tile, block_size)
    t, h = x.shape
    inter_size = w13.shape[1] // 2
    m_max = sorted_pairs.numel()
    # padding rows stay unwritten, as in TensorRT's output buffer
    inter = out if out is not None else torch.empty(m_max, inter_size, dtype=x.dtype, device=x.device)
    moe_gemm_swiglu_kernel[grid(m_max, inter_size, tile)](
        x.contiguous(), sorted_pairs, block_experts, num_padded, w13.contiguous(), h, inter_size, t * top_k, inter,
        TOP_K=top_k, ALIGN=block_size, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
        IEEE=x.dtype == torch.float32, num_warps=tile.num_warps, num_stages=tile.num_stages)
    return inter
