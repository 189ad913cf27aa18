"""Host side of MoEGemmSwiGLUQZ: MoEGemmSwiGLU's launch with codes, scales, zero points and the input order."""

from __future__ import annotations

import torch

from ..moe_gemm_swiglu.launch import launch
from ..moe_gemm_swiglu_q.launch import check_codes, check_zeros
from ..tiles import CPU_TACTIC


def run(x, sorted_pairs, block_experts, num_padded, codes, scales, zeros, order, top_k: int, block_size: int,
        bits: int, quant_block: int, ordered: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None
        ) -> torch.Tensor:
    """`zeros` uint8 [E, 2I, ceil(G*bits/8)] (padded here to whole int32 words, as the kernel reads them); `order`
    int32 [E, H] when `ordered`, else any int32 tensor (not read)."""
    from .kernel import moe_gemm_swiglu_qz_kernel

    hidden = x.shape[1]
    check_codes(codes, codes.shape[1], hidden, bits, "MoEGemmSwiGLUQZ")
    zeros = check_zeros(zeros, codes.shape[:2], hidden, bits, quant_block, "MoEGemmSwiGLUQZ")
    if ordered and (order.dtype != torch.int32 or tuple(order.shape) != (codes.shape[0], hidden)):
        raise ValueError(f"MoEGemmSwiGLUQZ: order {order.dtype} {tuple(order.shape)}, expected torch.int32 "
                         f"{(codes.shape[0], hidden)}")
    return launch(moe_gemm_swiglu_qz_kernel, x, (sorted_pairs, block_experts, num_padded),
                  (codes, scales, zeros, order), codes.shape[1] // 2, top_k, block_size, tactic, out, True, BITS=bits,
                  GROUP=quant_block, ORDERED=bool(ordered))
