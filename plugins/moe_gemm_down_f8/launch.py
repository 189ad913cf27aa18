"""Host side of MoEGemmDownF8: MoEGemmDownQ's kernel launched with BITS = F8_E4M3 (plugins/dequant.py: the e4m3fn
bytes decoded exactly, times the row's scale)."""

from __future__ import annotations

import torch

from ..f8 import F8_BITS, check_f8
from ..moe_gemm_down.launch import launch
from ..tiles import CPU_TACTIC


def run(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, top_k: int, block_size: int,
        tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    """`codes` uint8 [E, H, I] e4m3fn bytes; `scales` [E, H] per row, or [E] per tensor."""
    from ..moe_gemm_down_q.kernel import moe_gemm_down_q_kernel

    scales = check_f8(codes, scales, codes.shape[1], inter.shape[1], "MoEGemmDownF8")
    return launch(moe_gemm_down_q_kernel, inter, (sorted_pairs, block_experts, num_padded), weights,
                  (codes.view(torch.uint8), scales.to(inter.dtype)), codes.shape[1], block_size, tactic, out,
                  BITS=F8_BITS, GROUP=1)
