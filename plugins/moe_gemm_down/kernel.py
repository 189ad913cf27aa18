"""Triton kernel: one program per (BLOCK_M sorted rows, BLOCK_N of H). The tile's expert's w2 rows are
multiplied with its rows of `inter` over I in BLOCK_K steps (float32 accumulator), scaled by each row's
routing weight, and stored at the row of its pair: a scatter without collisions, so no atomics and a
deterministic result. `down_tile` is shared with the quantized plugin (plugins/dequant.py).
Argument order (inputs, scalars, outputs) is what TensorRT's AOT launch expects.
"""

import triton
import triton.language as tl

from ..dequant import weight_tile


@triton.jit
def down_tile(inter_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr, weights_ptr, w_ptr, s_ptr, z_ptr, H, INTER,
              P, M_MAX, E, y_ptr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr, IEEE: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr,
              ZEROS: tl.constexpr):
    # ZEROS: z_ptr holds the codes' zero points (plugins/dequant.py)
    # safe on any index data (TensorRT times tactics on made-up inputs): num_padded clamped to M_MAX, rows past it
    # masked, pairs outside [0, P) and experts outside [0, E) skipped
    row0 = tl.program_id(0) * BLOCK_M
    num_padded = tl.minimum(tl.load(num_padded_ptr), M_MAX)
    if row0 >= num_padded:
        return
    rows = row0 + tl.arange(0, BLOCK_M)  # [BM]
    pairs = tl.load(sorted_ptr + rows, mask=rows < num_padded, other=-1)
    valid = (pairs >= 0) & (pairs < P)
    if tl.max(valid.to(tl.int32), axis=0) == 0:
        return
    expert = tl.load(block_experts_ptr + row0 // ALIGN).to(tl.int64)
    if (expert < 0) | (expert >= E):
        return
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] hidden features
    dtype = inter_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, INTER, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(inter_ptr + rows[:, None].to(tl.int64) * INTER + ks[None, :],
                    mask=valid[:, None] & (ks[None, :] < INTER), other=0.0)
        w = weight_tile(w_ptr, s_ptr, z_ptr, expert, cols, ks, H, INTER, (ks[:, None] < INTER) & (cols[None, :] < H),
                        dtype, BITS, GROUP, ZEROS)
        if IEEE:
            acc += tl.dot(a, w, input_precision="ieee")
        else:
            acc += tl.dot(a, w)
    # the expert output rounds to the activation dtype (as the reference's F.linear does), then is weighted
    acc = acc.to(dtype).to(tl.float32)
    scale = tl.load(weights_ptr + pairs, mask=valid, other=0.0)  # [BM]
    out = y_ptr + pairs[:, None].to(tl.int64) * H + cols[None, :]
    tl.store(out, acc * scale[:, None], mask=valid[:, None] & (cols[None, :] < H))


@triton.jit
def moe_gemm_down_kernel(
    inter_ptr,  # [M_MAX, I]
    sorted_ptr,  # [M_MAX] int32
    block_experts_ptr,  # [NUM_BLOCKS] int32
    num_padded_ptr,  # [1] int32
    weights_ptr,  # [P] float32
    w2_ptr,  # [E, H, I]
    H,
    INTER,
    P,
    M_MAX,  # rows of sorted_ptr and inter_ptr
    E,  # experts in w2
    y_ptr,  # [P, H] float32
    ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    down_tile(inter_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr, weights_ptr, w2_ptr, w2_ptr, w2_ptr, H, INTER,
              P, M_MAX, E, y_ptr, ALIGN, BLOCK_M, BLOCK_N, BLOCK_K, IEEE, 0, 1, False)
