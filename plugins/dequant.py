"""Triton helper shared by the GEMM kernels: one [BLOCK_K, BLOCK_N] weight tile, either float weights or
weight-only integer codes dequantized on the fly (ONNX Runtime QMoE's format, see
common/quant.py): code = byte >> (k % (8/BITS) * BITS) & (2^BITS - 1),
w = (code - zero) * scale[n, k // GROUP], rounded to the activation dtype; zero = 2^(BITS-1), or with ZEROS
the group's stored zero point (an asymmetric checkpoint's), unpacked from its bytes like the codes.
With BITS = F8_E4M3 the weights are FP8 e4m3fn bytes (a compressed-tensors float-quantized checkpoint's),
decoded exactly with integer ops (`e4m3_to_float`: the same on sm_80, which has no FP8 types, and under the
interpreter), w = e4m3 * scale[n] in float32, rounded to the activation dtype.
"""

import triton
import triton.language as tl

# BITS of FP8 e4m3fn weights (one byte per weight, one scale per output row; GROUP unused, 1 by convention); the
# kernels' other BITS are 0 (float weights), 8 and 4 (integer codes)
F8_E4M3 = tl.constexpr(-8)


@triton.jit
def e4m3_to_float(byte):
    """uint8 e4m3fn bytes -> their float32 values, exactly: sign bit, 4-bit exponent (bias 7), 3-bit mantissa;
    exponent 0 is subnormal (m * 2^-9); no infinities, 0x7f / 0xff are NaN."""
    b = byte.to(tl.int32)
    sign = b >> 7
    exp = (b >> 3) & 15
    man = b & 7
    # a normal value is an fp32 with exponent exp - 7 + 127 and the 3 mantissa bits at the top of its 23
    normal = ((sign << 31) | ((exp + 120) << 23) | (man << 20)).to(tl.float32, bitcast=True)
    sub = man.to(tl.float32) * 0.001953125 * (1.0 - 2.0 * sign.to(tl.float32))  # m * 2^-9, signed (0x80 is -0.0)
    value = tl.where(exp == 0, sub, normal)
    return tl.where((b & 127) == 127, float("nan"), value)


@triton.jit
def zero_rows(K, BITS: tl.constexpr, GROUP: tl.constexpr):
    """Bytes per row of the zero points: ceil(G * BITS / 8) padded to whole int32 words (the layout the `trt`
    lowering stores and the launchers pad to), G = K / GROUP."""
    return (K // GROUP * BITS + 31) // 32 * 4


@triton.jit
def weight_tile(
    w_ptr,  # float weights [.., N, K], uint8 codes [.., N, K*BITS/8], or (F8_E4M3) e4m3 bytes [.., N, K]
    s_ptr,  # scales [.., N, K/GROUP] (F8_E4M3: [.., N]; unused when BITS == 0)
    z_ptr,  # ZEROS: uint8 zero points [.., N, zero_rows(K)], packed like the codes along the groups
    expert,  # int64 expert index
    cols,  # [BN] output rows n
    ks,  # [BK] input features k
    N,
    K,
    mask,  # [BK, BN]
    OUT_DTYPE: tl.constexpr,
    BITS: tl.constexpr,  # 0: float weights; 8 / 4: integer codes; F8_E4M3: FP8 bytes
    GROUP: tl.constexpr,  # inputs per scale (K for per-channel scales)
    ZEROS: tl.constexpr,  # stored zero points instead of 2^(BITS-1)
):
    n = cols.to(tl.int64)
    if BITS == 0:
        tile = tl.load(w_ptr + expert * N * K + n[None, :] * K + ks[:, None], mask=mask, other=0.0)
    elif BITS == F8_E4M3:
        byte = tl.load(w_ptr + expert * N * K + n[None, :] * K + ks[:, None], mask=mask, other=0)
        scale = tl.load(s_ptr + expert * N + n, mask=n < N, other=0.0)  # [BN]
        tile = (e4m3_to_float(byte) * scale.to(tl.float32)[None, :]).to(OUT_DTYPE)
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
