"""Triton helper shared by the GEMM kernels: one [BLOCK_K, BLOCK_N] weight tile, either float weights or
weight-only integer codes dequantized on the fly (ONNX Runtime QMoE's format, see
common/quant.py): code = byte >> (k % (8/BITS) * BITS) & (2^BITS - 1),
w = (code - zero) * scale[n, k // GROUP], rounded to the activation dtype; zero = 2^(BITS-1), or with ZEROS
the group's stored zero point (an asymmetric checkpoint's), unpacked from its bytes like the codes.
"""

import triton
import triton.language as tl


@triton.jit
def zero_rows(K, BITS: tl.constexpr, GROUP: tl.constexpr):
    """Bytes per row of the zero points: ceil(G * BITS / 8) padded to whole int32 words (the layout the `trt`
    lowering stores and the launchers pad to), G = K / GROUP."""
    return (K // GROUP * BITS + 31) // 32 * 4


@triton.jit
def weight_tile(
    w_ptr,  # float weights [.., N, K], or uint8 codes [.., N, K*BITS/8]
    s_ptr,  # scales [.., N, K/GROUP] (unused when BITS == 0)
    z_ptr,  # ZEROS: uint8 zero points [.., N, zero_rows(K)], packed like the codes along the groups
    expert,  # int64 expert index
    cols,  # [BN] output rows n
    ks,  # [BK] input features k
    N,
    K,
    mask,  # [BK, BN]
    OUT_DTYPE: tl.constexpr,
    BITS: tl.constexpr,  # 0: float weights
    GROUP: tl.constexpr,  # inputs per scale (K for per-channel scales)
    ZEROS: tl.constexpr,  # stored zero points instead of 2^(BITS-1)
):
    n = cols.to(tl.int64)
    if BITS == 0:
        tile = tl.load(w_ptr + expert * N * K + n[None, :] * K + ks[:, None], mask=mask, other=0.0)
    else:
        per_byte: tl.constexpr = 8 // BITS
        row_bytes = K // per_byte
        byte = tl.load(w_ptr + expert * N * row_bytes + n[None, :] * row_bytes + (ks // per_byte)[:, None],
                       mask=mask, other=0)
        code = (byte.to(tl.int32) >> ((ks % per_byte) * BITS)[:, None]) & ((1 << BITS) - 1)
        groups = K // GROUP
        g = ks // GROUP  # [BK]
        scale = tl.load(s_ptr + expert * N * groups + n[None, :] * groups + g[:, None], mask=mask, other=0.0)
        if ZEROS:
            z_row = zero_rows(K, BITS, GROUP)
            zbyte = tl.load(z_ptr + expert * N * z_row + n[None, :] * z_row + (g // per_byte)[:, None], mask=mask,
                            other=0)
            zero = (zbyte.to(tl.int32) >> ((g % per_byte) * BITS)[:, None]) & ((1 << BITS) - 1)
        else:
            zero = 1 << (BITS - 1)
        tile = ((code - zero).to(tl.float32) * scale.to(tl.float32)).to(OUT_DTYPE)
    return tile
