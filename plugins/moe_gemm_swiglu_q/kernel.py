"""Triton kernel: the SwiGLU grouped GEMM of moe_gemm_swiglu with the weight tiles dequantized on the fly
(plugins/dequant.py). Argument order (inputs, scalars, outputs) is what TensorRT's AOT launch expects."""

import triton
import triton.language as tl

from ..moe_gemm_swiglu.kernel import swiglu_tile


@triton.jit
def moe_gemm_swiglu_q_kernel(
    x_ptr,  # [T, H]
    sorted_ptr,  # [M_MAX] int32
    block_experts_ptr,  # [NUM_BLOCKS] int32
    num_padded_ptr,  # [1] int32
    codes_ptr,  # [E, 2I, H*BITS/8] uint8
    scales_ptr,  # [E, 2I, H/GROUP]
    H,
    INTER,
    P,
    M_MAX,
    E,
    inter_ptr,  # [M_MAX, I]
    TOP_K: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
    BITS: tl.constexpr,
    GROUP: tl.constexpr,  # inputs per scale (= H for per-channel scales)
):
    swiglu_tile(x_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr, codes_ptr, scales_ptr, codes_ptr, codes_ptr, H,
                INTER, P, M_MAX, E, inter_ptr, TOP_K, ALIGN, BLOCK_M, BLOCK_N, BLOCK_K, IEEE, BITS, GROUP, False, False)
