"""Host side of MoEGemmSwiGLUQ: MoEGemmSwiGLU's launch with codes + scales, the codes' bits and the scale group."""

from __future__ import annotations

import torch

from ..moe_gemm_swiglu.launch import launch
from ..tiles import CPU_TACTIC


def run(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k: int, block_size: int, bits: int,
        quant_block: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from .kernel import moe_gemm_swiglu_q_kernel

    return launch(moe_gemm_swiglu_q_kernel, x, (sorted_pairs, block_experts, num_padded), (codes, scales),
                  codes.shape[1] // 2, top_k, block_size, tactic, out, BITS=bits, GROUP=quant_block or x.shape[1])
