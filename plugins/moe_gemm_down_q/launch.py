"""Host side of MoEGemmDownQ: as MoEGemmDown, plus the codes' bits and the scale group."""

from __future__ import annotations

import torch

from ..moe_gemm_down.launch import grid
from ..moe_gemm_swiglu_q.launch import DTYPE_NAMES, group_size
from ..tiles import CPU_TACTIC, check, tile_for


def run(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, top_k: int, block_size: int,
        bits: int, quant_block: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from ..interpreter import fp32_under_interpreter
    from .kernel import moe_gemm_down_q_kernel

    (inter, scales), as_bf16 = fp32_under_interpreter(inter, scales)
    if as_bf16:  # the interpreter's bf16 tl.dot is wrong: compute in fp32 (the output is fp32 anyway)
        return run(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, top_k, block_size, bits,
                   quant_block, tactic, out)
    tile = tile_for(tactic, DTYPE_NAMES[inter.dtype], quantized=True)
    check(tile, block_size)
    p_total = weights.numel()
    hidden = codes.shape[1]
    inter_size = inter.shape[1]
    m_max = sorted_pairs.numel()
    y = out if out is not None else torch.empty(p_total, hidden, dtype=torch.float32, device=inter.device)
    moe_gemm_down_q_kernel[grid(m_max, hidden, tile)](
        inter.contiguous(), sorted_pairs, block_experts, num_padded, weights.contiguous().float(), codes.contiguous(),
        scales.contiguous(), hidden, inter_size, p_total, y, ALIGN=block_size, BLOCK_M=tile.block_m,
        BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, IEEE=inter.dtype == torch.float32, BITS=bits,
        GROUP=group_size(quant_block, inter_size), num_warps=tile.num_warps, num_stages=tile.num_stages)
    return y
