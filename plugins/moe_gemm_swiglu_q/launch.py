"""Host side of MoEGemmSwiGLUQ: as MoEGemmSwiGLU, plus the codes' bits and the scale group."""

from __future__ import annotations

import torch

from ..moe_gemm_swiglu.launch import grid
from ..tiles import CPU_TACTIC, check, tile_for

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def group_size(quant_block: int, k: int) -> int:
    return quant_block or k


def run(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k: int, block_size: int, bits: int,
        quant_block: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from ..interpreter import fp32_under_interpreter
    from .kernel import moe_gemm_swiglu_q_kernel

    (x, scales), as_bf16 = fp32_under_interpreter(x, scales)
    if as_bf16:  # the interpreter's bf16 tl.dot is wrong: compute in fp32, round the result
        result = run(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k, block_size, bits, quant_block,
                     tactic).to(torch.bfloat16)
        return result if out is None else out.copy_(result)
    tile = tile_for(tactic, DTYPE_NAMES[x.dtype], quantized=True)
    check(tile, block_size)
    t, h = x.shape
    inter_size = codes.shape[1] // 2
    m_max = sorted_pairs.numel()
    inter = out if out is not None else torch.empty(m_max, inter_size, dtype=x.dtype, device=x.device)
    moe_gemm_swiglu_q_kernel[grid(m_max, inter_size, tile)](
        x.contiguous(), sorted_pairs, block_experts, num_padded, codes.contiguous(), scales.contiguous(), h,
        inter_size, t * top_k, inter, TOP_K=top_k, ALIGN=block_size, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
        BLOCK_K=tile.block_k, IEEE=x.dtype == torch.float32, BITS=bits, GROUP=group_size(quant_block, h),
        num_warps=tile.num_warps, num_stages=tile.num_stages)
    return inter
