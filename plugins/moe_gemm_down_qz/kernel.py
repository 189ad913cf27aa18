"""Triton kernel: the down grouped GEMM of moe_gemm_down with the weight tiles dequantized on the fly against
stored zero points (plugins/dequant.py). Argument order (inputs, scalars, outputs) is what TensorRT's AOT launch
expects."""

import triton
import triton.language as tl

from ..moe_gemm_down.kernel import down_tile


@triton.jit
def moe_gemm_down_qz_kernel(
    inter_ptr,  # [M_MAX, I]
    sorted_ptr,  # [M_MAX] int32
    block_experts_ptr,  # [NUM_BLOCKS] int32
    num_padded_ptr,  # [1] int32
    weights_ptr,  # [P] float32
    codes_ptr,  # [E, H, I*BITS/8] uint8
    scales_ptr,  # [E, H, I/GROUP]
    zeros_ptr,  # [E, H, ceil(I/GROUP*BITS/32)*4] uint8
    H,
    INTER,
    P,
    M_MAX,
    E,
    y_ptr,  # [P, H] float32
    ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
    BITS: tl.constexpr,
    GROUP: tl.constexpr,  # inputs per scale and zero point
):
    down_tile(inter_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr, weights_ptr, codes_ptr, scales_ptr, zeros_ptr,
              H, INTER, P, M_MAX, E, y_ptr, ALIGN, BLOCK_M, BLOCK_N, BLOCK_K, IEEE, BITS, GROUP, True)
