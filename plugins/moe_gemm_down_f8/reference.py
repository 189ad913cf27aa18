"""Torch reference of MoEGemmDownF8: MoEGemmSwiGLUF8's dequantization, then MoEGemmDown's reference."""

from ..moe_gemm_down.reference import moe_gemm_down_reference
from ..moe_gemm_swiglu_f8.reference import f8_dequantize


def moe_gemm_down_f8_reference(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, top_k: int,
                               block_size: int):
    return moe_gemm_down_reference(inter, sorted_pairs, block_experts, num_padded, weights,
                                   f8_dequantize(codes, scales).to(inter.dtype), top_k, block_size)
