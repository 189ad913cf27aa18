"""Host side of MoEGemmDownQ: MoEGemmDown's launch with codes + scales, the codes' bits and the scale group."""

from __future__ import annotations

import torch

from ..moe_gemm_down.launch import launch
from ..moe_gemm_swiglu_q.launch import check_codes
from ..tiles import CPU_TACTIC


def run(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, top_k: int, block_size: int,
        bits: int, quant_block: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from .kernel import moe_gemm_down_q_kernel

    check_codes(codes, codes.shape[1], inter.shape[1], bits, "MoEGemmDownQ")
    return launch(moe_gemm_down_q_kernel, inter, (sorted_pairs, block_experts, num_padded), weights, (codes, scales),
                  codes.shape[1], block_size, tactic, out, BITS=bits, GROUP=quant_block or inter.shape[1])
