"""The sparse-dispatch pipeline as the `trt` lowering wires it, on torch tensors:

    MoERouter -> MoEAlign -> MoEGemmSwiGLU -> MoEGemmDown -> sum over the k rows of each token -> cast

Used by the kernel tests (tests/plugins/test_kernels.py), against mixtral_ref.moe's dense oracle. T tokens, k, H.
"""

from __future__ import annotations

import torch

from .moe_align.launch import run as align
from .moe_gemm_down.launch import run as gemm_down
from .moe_gemm_down_q.launch import run as gemm_down_q
from .moe_gemm_swiglu.launch import run as gemm_swiglu
from .moe_gemm_swiglu_q.launch import run as gemm_swiglu_q
from .tiles import ALIGN_BLOCK, CPU_TACTIC


def sparse_experts(x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor,
                   w2: torch.Tensor, block_size: int = ALIGN_BLOCK, tactic: int = CPU_TACTIC) -> torch.Tensor:
    """The MoEExperts op through the three plugin kernels: x [T, H] -> y [T, H] (x's dtype)."""
    t, k = experts.shape
    sorted_pairs, block_experts, num_padded = align(experts, w13.shape[0], block_size)
    inter = gemm_swiglu(x, sorted_pairs, block_experts, num_padded, w13, k, block_size, tactic)
    y_pairs = gemm_down(inter, sorted_pairs, block_experts, num_padded, weights, w2, k, block_size, tactic)
    return y_pairs.view(t, k, -1).sum(dim=1).to(x.dtype)  # [T, H]


def sparse_experts_q(x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, w13_codes: torch.Tensor,
                     w13_scales: torch.Tensor, w2_codes: torch.Tensor, w2_scales: torch.Tensor, bits: int,
                     quant_block: int, block_size: int = ALIGN_BLOCK, tactic: int = CPU_TACTIC) -> torch.Tensor:
    """The MoEExpertsQ op through the plugin kernels (weights dequantized on the fly): x [T, H] -> y [T, H]."""
    t, k = experts.shape
    routing = align(experts, w13_codes.shape[0], block_size)
    inter = gemm_swiglu_q(x, *routing, w13_codes, w13_scales, k, block_size, bits, quant_block, tactic)
    y_pairs = gemm_down_q(inter, *routing, weights, w2_codes, w2_scales, k, block_size, bits, quant_block, tactic)
    return y_pairs.view(t, k, -1).sum(dim=1).to(x.dtype)  # [T, H]
