"""Torch reference of MoEGemmSwiGLUQ: dequantize (common/quant.py), then MoEGemmSwiGLU's reference."""

import torch

from mixtral_trt.common.quant import QuantScheme

from ..moe_gemm_swiglu.reference import moe_gemm_swiglu_reference


def moe_gemm_swiglu_q_reference(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k: int,
                                block_size: int, bits: int, quant_block: int):
    w13 = QuantScheme(bits, quant_block).dequantize(codes.numpy(), scales.float().numpy())
    return moe_gemm_swiglu_reference(x, sorted_pairs, block_experts, num_padded,
                                     torch.from_numpy(w13).to(x.dtype), top_k, block_size)
