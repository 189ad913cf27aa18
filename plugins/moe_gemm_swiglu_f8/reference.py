"""Torch reference of MoEGemmSwiGLUF8: the e4m3fn bytes through torch.float8_e4m3fn to float32, times the row's
scale (the compressed-tensors dequantization, mixtral_ref/quant_linear.py), then MoEGemmSwiGLU's reference."""

import torch

from ..moe_gemm_swiglu.reference import moe_gemm_swiglu_reference


def f8_dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """uint8 [E, N, K] e4m3fn bytes, scales [E, N] (or [E] per tensor) -> float32 [E, N, K]."""
    s = scales.float().reshape(scales.shape[0], -1)
    return codes.view(torch.float8_e4m3fn).float() * s[:, :, None]


def moe_gemm_swiglu_f8_reference(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k: int,
                                 block_size: int):
    return moe_gemm_swiglu_reference(x, sorted_pairs, block_experts, num_padded,
                                     f8_dequantize(codes, scales).to(x.dtype), top_k, block_size)
