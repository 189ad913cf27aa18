"""Triton kernel: one program per (BLOCK_M sorted rows, BLOCK_N of INTER). The rows of a tile share one
expert (BLOCK_M divides the alignment block); their token rows of x are gathered, multiplied with the
expert's gate and up rows of w13 over H in BLOCK_K steps (float32 accumulators), and silu(gate) * up is
stored. Tiles past num_padded, or holding only padding, return at once. `swiglu_tile` is shared with the
quantized plugin (weights dequantized on the fly, plugins/dequant.py).
Argument order (inputs, scalars, outputs) is what TensorRT's AOT launch expects.
"""

import triton
import triton.language as tl

from ..dequant import weight_tile


@triton.jit
def swiglu_tile(x_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr, w_ptr, s_ptr, z_ptr, o_ptr, H, INTER, P,
                M_MAX, E, inter_ptr,
                TOP_K: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, IEEE: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr,
                ZEROS: tl.constexpr, ORDERED: tl.constexpr):
    # ZEROS: z_ptr holds the codes' zero points (plugins/dequant.py); ORDERED: o_ptr int32 [E, H] holds each
    # expert's input order (act-order codes: column j of the expert's codes is input feature order[e, j]), and the
    # A tile is gathered in that order, x[token, order[e, k]]
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
    tokens = (pairs // TOP_K).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] output features
    dtype = inter_ptr.dtype.element_ty
    acc_gate = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)  # [BK]
        if ORDERED:  # noqa: SIM108  (a compile-time branch of the kernel)
            a_cols = tl.load(o_ptr + expert * H + ks, mask=ks < H, other=0)  # [BK] input features of the codes
        else:
            a_cols = ks
        a = tl.load(x_ptr + tokens[:, None] * H + a_cols[None, :], mask=valid[:, None] & (ks[None, :] < H),
                    other=0.0)
        w_mask = (ks[:, None] < H) & (cols[None, :] < INTER)  # [BK, BN]
        # w13 rows: gate (W1) in [0, INTER), up (W3) in [INTER, 2 INTER)
        wg = weight_tile(w_ptr, s_ptr, z_ptr, expert, cols, ks, 2 * INTER, H, w_mask, dtype, BITS, GROUP, ZEROS)
        wu = weight_tile(w_ptr, s_ptr, z_ptr, expert, cols + INTER, ks, 2 * INTER, H, w_mask, dtype, BITS, GROUP,
                         ZEROS)
        if IEEE:
            acc_gate += tl.dot(a, wg, input_precision="ieee")
            acc_up += tl.dot(a, wu, input_precision="ieee")
        else:
            acc_gate += tl.dot(a, wg)
            acc_up += tl.dot(a, wu)
    # SwiGLU in the activation dtype, as the reference computes it
    gate = acc_gate.to(dtype).to(tl.float32)
    up = acc_up.to(dtype).to(tl.float32)
    act = gate * tl.sigmoid(gate) * up
    out = inter_ptr + rows[:, None].to(tl.int64) * INTER + cols[None, :]
    tl.store(out, act.to(dtype), mask=valid[:, None] & (cols[None, :] < INTER))


@triton.jit
def moe_gemm_swiglu_kernel(
    x_ptr,  # [T, H]
    sorted_ptr,  # [M_MAX] int32
    block_experts_ptr,  # [NUM_BLOCKS] int32
    num_padded_ptr,  # [1] int32
    w13_ptr,  # [E, 2I, H]
    H,
    INTER,
    P,  # T*k real pairs; also the padding sentinel
    M_MAX,  # rows of sorted_ptr and inter_ptr
    E,  # experts in w13
    inter_ptr,  # [M_MAX, I]
    TOP_K: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,  # float32 inputs: full-precision dot (no TF32)
):
    swiglu_tile(x_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr, w13_ptr, w13_ptr, w13_ptr, w13_ptr, H, INTER,
                P, M_MAX, E, inter_ptr, TOP_K, ALIGN, BLOCK_M, BLOCK_N, BLOCK_K, IEEE, 0, 1, False, False)
