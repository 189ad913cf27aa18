"""Torch reference of MoEGemmSwiGLUQZ: dequantize with the zero points (common/quant.py), put each expert's columns
back in input order (act-order), then MoEGemmSwiGLU's reference."""

import torch

from mixtral_trt.common.quant import QuantScheme

from ..moe_gemm_swiglu.reference import moe_gemm_swiglu_reference


def moe_gemm_swiglu_qz_reference(x, sorted_pairs, block_experts, num_padded, codes, scales, zeros, order,
                                 top_k: int, block_size: int, bits: int, quant_block: int, ordered: int):
    stored = torch.from_numpy(QuantScheme(bits, quant_block).dequantize(codes.numpy(), scales.float().numpy(),
                                                                        zeros.numpy()))  # [E, 2I, H], codes' order
    w13 = stored.clone()
    if ordered:  # column j of expert e is input feature order[e, j]
        index = order.long()[:, None, :].expand_as(stored)
        w13 = torch.zeros_like(stored).scatter_(2, index, stored)
    return moe_gemm_swiglu_reference(x, sorted_pairs, block_experts, num_padded, w13.to(x.dtype), top_k, block_size)
