"""Host side of MoEGemmSwiGLUF8: MoEGemmSwiGLUQ's kernel launched with BITS = F8_E4M3 (plugins/dequant.py: the
e4m3fn bytes decoded exactly, times the row's scale)."""

from __future__ import annotations

import torch

from ..f8 import F8_BITS, check_f8
from ..moe_gemm_swiglu.launch import launch
from ..tiles import CPU_TACTIC


def run(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k: int, block_size: int,
        tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    """`codes` uint8 [E, 2I, H] e4m3fn bytes; `scales` [E, 2I] per row, or [E] per tensor."""
    from ..moe_gemm_swiglu_q.kernel import moe_gemm_swiglu_q_kernel

    hidden = x.shape[1]
    scales = check_f8(codes, scales, codes.shape[1], hidden, "MoEGemmSwiGLUF8")
    return launch(moe_gemm_swiglu_q_kernel, x, (sorted_pairs, block_experts, num_padded),
                  (codes.view(torch.uint8), scales.to(x.dtype)), codes.shape[1] // 2, top_k, block_size, tactic, out,
                  BITS=F8_BITS, GROUP=1)
