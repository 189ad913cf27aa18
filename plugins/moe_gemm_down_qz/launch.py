"""Host side of MoEGemmDownQZ: MoEGemmDown's launch with codes, scales and zero points."""

from __future__ import annotations

import torch

from ..moe_gemm_down.launch import launch
from ..moe_gemm_swiglu_q.launch import check_codes, check_zeros
from ..tiles import CPU_TACTIC


def run(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, zeros, top_k: int, block_size: int,
        bits: int, quant_block: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    """`zeros` uint8 [E, H, ceil(G*bits/8)] (padded here to whole int32 words, as the kernel reads them)."""
    from .kernel import moe_gemm_down_qz_kernel

    check_codes(codes, codes.shape[1], inter.shape[1], bits, "MoEGemmDownQZ")
    zeros = check_zeros(zeros, codes.shape[:2], inter.shape[1], bits, quant_block, "MoEGemmDownQZ")
    return launch(moe_gemm_down_qz_kernel, inter, (sorted_pairs, block_experts, num_padded), weights,
                  (codes, scales, zeros), codes.shape[1], block_size, tactic, out, True, BITS=bits,
                  GROUP=quant_block)
