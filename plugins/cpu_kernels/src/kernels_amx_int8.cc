// AMX-INT8 tiles for the int8 / int4 GEMMs of several tokens (prefill, batches), used by the amx table
// (kernels_amx.cc) for MoEQ and LinearQ. Compiled with -mamx-tile -mamx-int8 besides the avx512 flags; called only
// where cpuid, XCR0 and the kernel's permission (isa.cc) allow it.
//
// C[n, t] = sum_k W[n, k] X[t, k] with `tdpbssd` (int8 x int8, exact int32 sums): A tiles are 16 weight rows x 32
// (or 64) inputs, unpacked per call from the codes as stored into signed int8 (code minus the zero point 2^(bits-1);
// int4: each 16-byte run of 32 codes to its low nibbles, then its high ones, the order quantize_rows' `perm4` gives
// the activations), each weight unpacked once per call whatever the number of tokens, into a per-thread scratch of
// two 16-row blocks; B tiles are 32 (64) inputs x 16 tokens in AMX's quad layout (B[k / 4][t][k % 4]), the call's
// int8 activations transposed once per call. One block of B inputs (B a multiple of 32: tiles of 64 inputs where
// B allows) accumulates in the int32 tile, which is then stored and its 16 x 16 sums converted to float32 and
// scaled by x scale * w scale into float32 accumulators: y[t, n] = sum_b float(C_b[n, t]) * (xs[t, b] * ws[n, b]),
// the blocks in order (the block's int32 sum is exact: the avx512 kernels' int32 lanes, summed earlier). Two
// weight blocks x two token blocks per pass (four independent int32 tiles). Each output is computed by one
// fixed sequence of operations wherever its row and token fall in the tiles, so the thread split never changes
// it. Calls with fewer than kMinTokens (10) tokens run the avx512 kernels (decode streams the weights once: tiles
// would not make it faster); weight rows and tokens past the last whole 16 are zero-padded in the scratch.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "amx_tiles.h"
#include "kernels.h"

namespace mixtral_cpu {
namespace {

// measured (one thread, K 768, 160-row calls, weights from memory): at 8 tokens the tiles (padded to 16) take as
// long as the avx512 kernel, at 10 they are 1.4x (int8) to 1.6x (int4) faster, at 16 1.9x
constexpr int kMinTokens = 10;

struct Scratch {
  std::vector<int8_t> x;      // [token blocks][K rounded up to 64][16 tokens]: B tiles (quads of inputs x tokens)
  std::vector<float> xs;      // [token blocks][K / B][16 tokens]: activation scales, 0 past M
  std::vector<int8_t> w;      // [2 blocks][K / step][16 rows][step]: A tiles of signed weights, 0 past n1
  std::vector<float> ws;      // [2 blocks][K / B][16 rows]: weight scales, 0 past n1
  alignas(64) int32_t c[2][4][16][16];  // the int32 tiles of two blocks of inputs (by block parity)
  alignas(64) float acc[4][16][16];  // [tile][weight row][token]
};

// tmm0..3: C of (weight block, token block) (0, 0), (1, 0), (0, 1), (1, 1); tmm4, 5: A of the two weight blocks;
// tmm6, 7: B of the two token blocks; `step` inputs (32 or 64) per tile product
void configure(int step) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = t >= 6 ? static_cast<uint8_t>(step / 4) : 16;
    cfg.colsb[t] = t == 4 || t == 5 ? static_cast<uint16_t>(step) : 64;
  }
  _tile_loadconfig(&cfg);
}

// the call's activations (rows idx[0..M)) -> s.x (B tiles) and s.xs (scales), zero past M
void pack_activations(const QuantGemm& g, int blocks, int Kp, Scratch& s) {
  const int groups = g.K / g.B;
  s.x.resize(static_cast<size_t>(blocks) * Kp * 16);
  s.xs.assign(static_cast<size_t>(blocks) * groups * 16, 0.f);
  for (int tb = 0; tb < blocks; ++tb) {
    const int8_t* rows[16];
    for (int r = 0; r < 16; ++r) {
      const int m = tb * 16 + r;
      rows[r] = m < g.M ? g.xq + static_cast<size_t>(g.idx[m]) * g.ldx : nullptr;
      if (rows[r])
        for (int b = 0; b < groups; ++b)
          s.xs[(static_cast<size_t>(tb) * groups + b) * 16 + r] = g.xs[static_cast<size_t>(g.idx[m]) * g.ldxs + b];
    }
    for (int k = 0; k < Kp; k += 64) {
      const __mmask64 mask = g.K - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (g.K - k)) - 1;
      __m512i v[16];
      for (int r = 0; r < 16; ++r) v[r] = rows[r] ? _mm512_maskz_loadu_epi8(mask, rows[r] + k) : _mm512_setzero_si512();
      transpose16(v, reinterpret_cast<uint32_t*>(s.x.data() + (static_cast<size_t>(tb) * Kp + k) * 16));
    }
  }
}

// weight rows [n, n + rows) (rows <= 16) -> block `blk` of s.w (signed int8) and s.ws, zero past `rows`
template <int BITS>
void unpack_weights(const QuantGemm& g, int n, int rows, int blk, int step, Scratch& s) {
  const int K = g.K, groups = K / g.B;
  const size_t row_bytes = static_cast<size_t>(K) * BITS / 8;
  int8_t* out = s.w.data() + static_cast<size_t>(blk) * 16 * K;
  float* scales = s.ws.data() + static_cast<size_t>(blk) * groups * 16;
  for (int r = 0; r < 16; ++r) {
    int8_t* o = out + static_cast<size_t>(r) * step;  // input k at o + k / step * 16 * step + k % step
    if (r >= rows) {
      for (int k = 0; k < K; k += 32) std::memset(o + k / step * 16 * step + k % step, 0, 32);
      for (int b = 0; b < groups; ++b) scales[b * 16 + r] = 0.f;
      continue;
    }
    const uint8_t* w = g.w + (n + r) * row_bytes;
    for (int b = 0; b < groups; ++b) scales[b * 16 + r] = g.ws[static_cast<size_t>(n + r) * groups + b];
    for (int k = 0; k < K; k += 32) {
      __m256i v;
      if constexpr (BITS == 8) {
        v = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k)), _mm256_set1_epi8(-128));
      } else {  // 16 bytes -> the 16 low nibbles (even inputs), then the 16 high ones, minus 8
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k / 2)), mask = _mm_set1_epi8(0x0F);
        const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        v = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k / step * 16 * step + k % step), v);
    }
  }
}

// acc += float(c) * (ws[row] * xs[token]) for one block of inputs ([weight row][token])
// (the first block: acc = 0 + float(c) * scale, without reading acc: no clearing pass, as the sum is the same)
inline void rescale(const int32_t (*c)[16], float (*acc)[16], const float* ws, const float* xs, bool first) {
  const __m512 xv = _mm512_loadu_ps(xs);
  for (int r = 0; r < 16; ++r) {
    const __m512 sums = _mm512_cvtepi32_ps(_mm512_load_si512(c[r]));
    const __m512 scale = _mm512_mul_ps(xv, _mm512_set1_ps(ws[r]));
    const __m512 before = first ? _mm512_setzero_ps() : _mm512_load_ps(acc[r]);
    _mm512_store_ps(acc[r], _mm512_fmadd_ps(sums, scale, before));
  }
}

// acc[q] ([weight row][token]) -> y[token, row] for `tokens` tokens and `rows` rows
inline void store(const Scratch& s, int q, int tokens, int rows, float* y, size_t ldy) {
  __m512i v[16];
  for (int r = 0; r < 16; ++r) v[r] = _mm512_castps_si512(_mm512_load_ps(s.acc[q][r]));
  alignas(64) uint32_t t[16][16];
  transpose16(v, &t[0][0]);
  const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
  for (int m = 0; m < tokens; ++m)
    _mm512_mask_storeu_ps(y + m * ldy, mask, _mm512_castsi512_ps(_mm512_load_si512(t[m])));
}

template <int BITS>
void gemm_tiles(const QuantGemm& g, void (*vector_kernel)(const QuantGemm&)) {
  if (g.M < kMinTokens || g.n1 <= g.n0) return vector_kernel(g);
  thread_local Scratch s;
  const int K = g.K, B = g.B, groups = K / B, step = B % 64 == 0 ? 64 : 32, steps = B / step;
  const int Kp = (K + 63) / 64 * 64, blocks = (g.M + 15) / 16;
  pack_activations(g, blocks, Kp, s);
  s.w.resize(static_cast<size_t>(2) * 16 * K);
  s.ws.resize(static_cast<size_t>(2) * groups * 16);
  configure(step);
  const size_t xblock = static_cast<size_t>(Kp) * 16;  // bytes of one token block's B tiles
  for (int n = g.n0; n < g.n1; n += 32) {
    const int rows0 = std::min(16, g.n1 - n), rows1 = std::min(16, std::max(0, g.n1 - n - 16));
    const bool two_n = rows1 > 0;
    unpack_weights<BITS>(g, n, rows0, 0, step, s);
    if (two_n) unpack_weights<BITS>(g, n + 16, rows1, 1, step, s);
    const int8_t* w0 = s.w.data();
    const int8_t* w1 = w0 + static_cast<size_t>(16) * K;
    for (int tb = 0; tb < blocks; tb += 2) {
      const bool two_t = tb + 1 < blocks;
      const int8_t* x0 = s.x.data() + tb * xblock;
      const int8_t* x1 = x0 + xblock;
      // block b's tile products, then block b - 1's sums (stored by the pass before) rescaled: the vector work
      // overlaps the tile unit's
      for (int b = 0; b <= groups; ++b) {
        if (b < groups) {
          int32_t(*c)[16][16] = s.c[b & 1];
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          for (int i = 0; i < steps; ++i) {
            const int k = b * B + i * step;
            _tile_loadd(4, w0 + static_cast<size_t>(k) * 16, step);
            _tile_loadd(6, x0 + static_cast<size_t>(k) * 16, 64);
            _tile_dpbssd(0, 4, 6);
            if (two_n) {
              _tile_loadd(5, w1 + static_cast<size_t>(k) * 16, step);
              _tile_dpbssd(1, 5, 6);
            }
            if (two_t) {
              _tile_loadd(7, x1 + static_cast<size_t>(k) * 16, 64);
              _tile_dpbssd(2, 4, 7);
              if (two_n) _tile_dpbssd(3, 5, 7);
            }
          }
          _tile_stored(0, c[0], 64);
          if (two_n) _tile_stored(1, c[1], 64);
          if (two_t) _tile_stored(2, c[2], 64);
          if (two_n && two_t) _tile_stored(3, c[3], 64);
        }
        if (b == 0) continue;
        const int p = b - 1;
        const int32_t(*c)[16][16] = s.c[p & 1];
        const float* ws0 = s.ws.data() + static_cast<size_t>(p) * 16;
        const float* ws1 = ws0 + static_cast<size_t>(groups) * 16;
        const float* xs0 = s.xs.data() + (static_cast<size_t>(tb) * groups + p) * 16;
        const float* xs1 = xs0 + static_cast<size_t>(groups) * 16;
        rescale(c[0], s.acc[0], ws0, xs0, p == 0);
        if (two_n) rescale(c[1], s.acc[1], ws1, xs0, p == 0);
        if (two_t) rescale(c[2], s.acc[2], ws0, xs1, p == 0);
        if (two_n && two_t) rescale(c[3], s.acc[3], ws1, xs1, p == 0);
      }
      float* y = g.y + static_cast<size_t>(tb) * 16 * g.ldy + (n - g.n0);
      const int tokens0 = std::min(16, g.M - tb * 16);
      store(s, 0, tokens0, rows0, y, g.ldy);
      if (two_n) store(s, 1, tokens0, rows1, y + 16, g.ldy);
      if (two_t) {
        const int tokens1 = std::min(16, g.M - (tb + 1) * 16);
        store(s, 2, tokens1, rows0, y + 16 * g.ldy, g.ldy);
        if (two_n) store(s, 3, tokens1, rows1, y + 16 * g.ldy + 16, g.ldy);
      }
    }
  }
  _tile_release();
}

}  // namespace

void amx_gemm_q8(const QuantGemm& g) { gemm_tiles<8>(g, kernels_avx512().gemm_q8); }
void amx_gemm_q4(const QuantGemm& g) { gemm_tiles<4>(g, kernels_avx512().gemm_q4); }

}  // namespace mixtral_cpu
