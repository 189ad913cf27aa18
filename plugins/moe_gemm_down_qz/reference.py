"""Torch reference of MoEGemmDownQZ: dequantize with the zero points (common/quant.py), then MoEGemmDown's
reference."""

import torch

from mixtral_trt.common.quant import QuantScheme

from ..moe_gemm_down.reference import moe_gemm_down_reference


def moe_gemm_down_qz_reference(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, zeros,
                               top_k: int, block_size: int, bits: int, quant_block: int):
    w2 = QuantScheme(bits, quant_block).dequantize(codes.numpy(), scales.float().numpy(), zeros.numpy())
    return moe_gemm_down_reference(inter, sorted_pairs, block_experts, num_padded, weights,
                                   torch.from_numpy(w2).to(inter.dtype), top_k, block_size)
