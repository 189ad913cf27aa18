// AMX helpers shared by kernels_amx.cc (AMX-BF16) and kernels_amx_int8.cc (AMX-INT8): the tile configuration
// LDTILECFG reads and a 16 x 16 dword transpose in registers (the pair / quad layouts of B tiles). Internal
// linkage: each file compiles its own copy with its own -m flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace mixtral_cpu {
namespace {

struct TileConfig {  // palette 1 (the layout LDTILECFG reads)
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// out[p] (16 dwords each) = column p of the 16 x 16 dword matrix whose rows are r[0..16)
inline void transpose16(const __m512i (&r)[16], uint32_t* out) {
  __m512i u[4][4];  // u[g][j], 128-bit lane L: rows 4g .. 4g + 3 of column 4L + j
  for (int g = 0; g < 4; ++g) {
    const __m512i t0 = _mm512_unpacklo_epi32(r[4 * g], r[4 * g + 1]), t1 = _mm512_unpackhi_epi32(r[4 * g], r[4 * g + 1]);
    const __m512i t2 = _mm512_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
    const __m512i t3 = _mm512_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
    u[g][0] = _mm512_unpacklo_epi64(t0, t2);
    u[g][1] = _mm512_unpackhi_epi64(t0, t2);
    u[g][2] = _mm512_unpacklo_epi64(t1, t3);
    u[g][3] = _mm512_unpackhi_epi64(t1, t3);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i x01 = _mm512_shuffle_i32x4(u[0][j], u[1][j], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i x23 = _mm512_shuffle_i32x4(u[0][j], u[1][j], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i y01 = _mm512_shuffle_i32x4(u[2][j], u[3][j], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i y23 = _mm512_shuffle_i32x4(u[2][j], u[3][j], _MM_SHUFFLE(3, 2, 3, 2));
    _mm512_storeu_si512(out + (0 + j) * 16, _mm512_shuffle_i32x4(x01, y01, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_si512(out + (4 + j) * 16, _mm512_shuffle_i32x4(x01, y01, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_si512(out + (8 + j) * 16, _mm512_shuffle_i32x4(x23, y23, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_si512(out + (12 + j) * 16, _mm512_shuffle_i32x4(x23, y23, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}

}  // namespace
}  // namespace mixtral_cpu
