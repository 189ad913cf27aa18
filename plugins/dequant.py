"""Triton helper shared by the GEMM kernels: one [BLOCK_K, BLOCK_N] weight tile, either float weights or
weight-only integer codes dequantized on the fly (ONNX Runtime QMoE's format, see
common/quant.py): code = byte >> (k % (8/BITS) * BITS) & (2^BITS - 1),
w = (code - 2^(BITS-1)) * scale[n, k // GROUP], rounded to the activation dtype.
"""

import triton
import triton.language as tl


@triton.jit
def weight_tile(
    w_ptr,  # float weights [.., N, K], or uint8 codes [.., N, K*BITS/8]
    s_ptr,  # scales [.., N, K/GROUP] (unused when BITS == 0)
    expert,  # int64 expert index
    cols,  # [BN] output rows n
    ks,  # [BK] input features k
    N,
    K,
    mask,  # [BK, BN]
    OUT_DTYPE: tl.constexpr,
    BITS: tl.constexpr,  # 0: float weights
    GROUP: tl.constexpr,  # inputs per scale (K for per-channel scales)
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
        scale = tl.load(s_ptr + expert * N * groups + n[None, :] * groups + (ks // GROUP)[:, None], mask=mask,
                        other=0.0)
        tile = ((code - (1 << (BITS - 1))).to(tl.float32) * scale.to(tl.float32)).to(OUT_DTYPE)
    return tile
