// AVX-512 (F, BW, VL) float / bf16 kernels, 256-bit AVX512-VNNI int8 dots. Compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512vnni -mfma; called only where cpuid says the CPU has them (isa.cc).
#include <immintrin.h>

#include <vector>

#include "gemm_impl.h"
#include "simd256.h"

namespace mixtral_cpu {
namespace {

struct Avx512 : Simd256Quant {
  static constexpr int W = 16, MR_F = 4, NR_F = 4, MR_Q = 4, NR_Q = 2;
  using F = __m512;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F loadw(const float* p) { return _mm512_loadu_ps(p); }
  static F loadw(const uint16_t* p) {  // 16 bf16 -> float32: the bits shifted into the high half
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static F bcast(float a) { return _mm512_set1_ps(a); }
  static void store(float* p, F a) { _mm512_storeu_ps(p, a); }
  // exp(x) for x <= 0: 2^k p(r), k = round(x / ln2), r = x - k ln2 (two-part ln2), p the degree-6 Taylor
  // polynomial (|r| <= ln2 / 2: relative error < 2e-7); x below -87 (and -inf) gives 0
  static F exp_nonpositive(F x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.f), _CMP_GE_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
    const F k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    F p = _mm512_set1_ps(1.f / 720);
    for (const float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, k));
  }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(F a) { return _mm512_reduce_add_ps(a); }
  // VNNI takes the unsigned codes as they are (u8 x s8: exact int32 lanes, each the sum of 4 adjacent
  // products); the zero point's share, zp * x lane by lane (a dot of the same x), is subtracted per block
  static constexpr bool kUnsignedCodes = true;
  static Q load_q8(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Q load_q4(const uint8_t* p) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), mask = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), _mm_and_si128(bytes, mask));
  }
  template <int BITS>
  static Q zero_point() { return _mm256_set1_epi8(static_cast<char>(1 << (BITS - 1))); }
  static I dot(I acc, Q w, Q x) { return _mm256_dpbusd_epi32(acc, w, x); }
};

// Blocks of 32 (the default): two blocks per 512-bit step, each block's int32 lanes scaled by its own
// x scale * w scale through one vector product (lanes 0-7 block b, 8-15 block b + 1) instead of a scalar
// broadcast per block; an odd last block runs in the low half with the high half zero.
template <int BITS>
inline __m512i load_codes64(const uint8_t* p, bool half) {  // 64 (or 32) weights of two (one) blocks, as u8
  if constexpr (BITS == 8) return half ? _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))
                                       : _mm512_loadu_si512(p);
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i bytes = half ? _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))
                             : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i lo = _mm256_and_si256(bytes, mask), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
  // [lo0 lo1 hi0 hi1] (128-bit lanes) -> [lo0 hi0 lo1 hi1]: each block's even elements, then its odd ones
  const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  return _mm512_shuffle_i64x2(both, both, _MM_SHUFFLE(3, 1, 2, 0));
}

// Two whole blocks of int4 codes in the lane order [block b evens, block b+1 evens, b odds, b+1 odds] (128-bit
// lanes): the 32 code bytes broadcast to both halves (a plain load), the high half shifted down a nibble, masked.
// Two instructions instead of load_codes64's five, two of them cross-lane shuffles; the activations are put in
// the same order once per activation row (interleave_blocks), not once per weight row.
inline __m512i load_codes64_q4_interleaved(const uint8_t* p) {
  const __m512i bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_and_si512(_mm512_srlv_epi64(bytes, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), _mm512_set1_epi8(0x0F));
}

// [b evens, b odds, b+1 evens, b+1 odds] (the stored int8 activations of int4 weights) -> the order above
inline __m512i interleave_blocks(__m512i x) { return _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0)); }

// lanes 0-7: p[0], 8-15: p[1] (or 0); `interleaved`: lanes 0-3 and 8-11 p[0], 4-7 and 12-15 p[1] (the order of
// load_codes64_q4_interleaved's int32 sums)
inline __m512 scales2(const float* p, bool half, bool interleaved = false) {
  const __m512i index = interleaved ? _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0)
                                    : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  // two floats at 4-byte alignment: movq through the unaligned integer load
  const __m128 pair = half ? _mm_load_ss(p) : _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm512_permutexvar_ps(index, _mm512_castps128_ps512(pair));
}

// One activation row's share of a pair of blocks (b, b + 1; or the odd last block alone in the low half): its int8
// codes in the lane order of the weights' codes, the zero point's share of its dots negated (each (row, weight row)
// dot starts from it: the same exact int32 lanes as subtracting it after the dot, one instruction fewer per pair),
// its two scales per lane
struct XPair {
  __m512i x, zp_neg;
  __m512 s;
};

template <int BITS>
inline XPair x_pair(const int8_t* xq, const float* xs, int b, int blocks) {
  const bool half = b + 1 == blocks;
  const bool interleaved = BITS == 4 && !half;  // whole pairs of int4 blocks: load_codes64_q4_interleaved
  const int k = b * 32;
  __m512i xv = half ? _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k)))
                    : _mm512_loadu_si512(xq + k);
  if (interleaved) xv = interleave_blocks(xv);
  const __m512i zero_point = _mm512_set1_epi8(static_cast<char>(1 << (BITS - 1)));
  const __m512i zp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), zero_point, xv);
  return {xv, _mm512_sub_epi32(_mm512_setzero_si512(), zp), scales2(xs + b, half, interleaved)};
}

// MR activation rows x NR weight rows, blocks of 32: xq[i] points to the row's XPair per pair of blocks (prepared
// once per call: gemm_quant), not to its int8 codes
template <int BITS, int MR, int NR>
inline void tile_q32(const QuantGemm& g, const int8_t* const* xq, const float* const* /*xs: in the XPairs*/,
                     const uint8_t* const* w, const float* const* ws, const int* col, float* y) {
  __m512 facc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) facc[i][j] = _mm512_setzero_ps();
  const int blocks = g.K / 32;
  for (int b = 0; b < blocks; b += 2) {
    const bool half = b + 1 == blocks;
    const bool interleaved = BITS == 4 && !half;
    const int k = b * 32;
    __m512i wq[NR];
    __m512 wsv[NR];
    for (int j = 0; j < NR; ++j) {
      wq[j] = interleaved ? load_codes64_q4_interleaved(w[j] + k / 2) : load_codes64<BITS>(w[j] + k * BITS / 8, half);
      wsv[j] = scales2(ws[j] + b, half, interleaved);
    }
    for (int i = 0; i < MR; ++i) {
      const XPair xp = reinterpret_cast<const XPair*>(xq[i])[b / 2];
      for (int j = 0; j < NR; ++j) {
        const __m512i dot = _mm512_dpbusd_epi32(xp.zp_neg, wq[j], xp.x);
        facc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(xp.s, wsv[j]), facc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      if (col[j] >= 0) y[i * g.ldy + col[j]] = _mm512_reduce_add_ps(facc[i][j]);
}

// Decode (one or two activation rows: batch 1, an expert's few tokens at small batches): two rows x four weight
// rows per pass; more rows (up to kQuadMinRows - 1): four x four (16 accumulators, each weight vector used by four
// rows). Each row's XPairs are computed once per call into a per-thread scratch instead of once per four weight
// rows: a tile then spends, per 64 weights and (row, weight row) pair, the VNNI dot, the int32 -> float
// conversion, the scale product and the FMA, plus the weights' unpacking shared by its rows.
constexpr int kDecodeRows = 2, kDecodeNR = 4, kRowsMR = 4, kRowsNR = 4;

template <int BITS>
void gemm_q32(const QuantGemm& g) {
  auto tiles = [&](auto mr_max, auto nr_max) {
    constexpr int MR = decltype(mr_max)::value, NR = decltype(nr_max)::value;
    impl::quant_gemm_loop<NR, MR, BITS>(g, [&](auto mr, auto xq, auto xs, auto w, auto ws, const int* col,
                                             float* y) {
      tile_q32<BITS, decltype(mr)::value, NR>(g, xq, xs, w, ws, col, y);
    });
  };
  if (g.M <= kDecodeRows)
    tiles(std::integral_constant<int, kDecodeRows>{}, std::integral_constant<int, kDecodeNR>{});
  else
    tiles(std::integral_constant<int, kRowsMR>{}, std::integral_constant<int, kRowsNR>{});
}

// ---- Many activation rows (prefill: a prompt's projections and LM head, an expert's tokens), blocks of 32k:
// the weights are turned so that one vector spans 16 weight rows. Per 32 inputs, the 16 rows' codes become 8 vectors
// in the quad layout (lane r of vector j: inputs 4j .. 4j + 3 of weight row r; int4: each dword's low nibbles, then
// its high ones, which is the order of perm4's activations), made in registers by 4 x 4 dword transposes of the
// stored runs and shared by up to kQuadRows activation rows. Each row's 4 inputs are broadcast to the 16 lanes, so
// one int32 vector holds the 16 weight rows' sums of the block, started from the zero point's share (-zp * the sum
// of the row's codes over the block) and converted and scaled once per block: 8 VNNI dots and 3 float operations per
// (row, 16 weight rows, 32 inputs), against 32 operations for the 4 x 4 tiles, whose vectors each hold one (row,
// weight row) pair and so need a conversion, a scale product and an FMA per pair. A row's outputs are computed the
// same way whichever rows share its tile, and every weight row in its own lane, so neither the batch nor the thread
// split changes them.
//
// A pass takes row p of 16 runs of the call's weight rows (StreamRows: 16 sequential streams, as the tiles above take
// 4) and prefetches the next pass's rows a share per 32 inputs; outputs are stored lane by lane.
//
// Where it is used: calls of kQuadMinRows+ rows. The transposes cost ~36 operations per 16 weight rows and 32 inputs
// (int8: ~48), shared by a tile's rows. Measured (with 16 adjacent rows per pass, before the runs) on an AMD
// EPYC (family 26, no AMX; one thread, CPU time, weights in cache: `mixtral_cpu_time_gemm_q`), the kernel alone
// beats the tiles above from 3 rows for int4 (1.2-2.0x at 3-64 rows) and from 4 for int8 (1.2-1.6x); but whole
// engines decoding batch 8 (an expert's 3-6 rows, weights from memory) were 5-10% slower with quads from 4 or 8
// rows, while from 16 rows they kept the whole prefill gain (512 tokens: int4 245 -> 170 ms, int8 201 -> 183 ms).
// One row (decode at batch 1) is bound by the bytes and stays on the streaming tiles. On CPUs with AMX-INT8, calls
// of 10+ tokens run on its tiles (kernels_amx_int8.cc) and never reach these.
constexpr int kQuadRows = 8, kQuadMinRows = 16;

struct QuadScratch {
  std::vector<int32_t> zp_neg;  // [M][K / B]: -zp * the sum of row m's codes over block b
  std::vector<float> ws_t;  // [K / B][16]: the 16 weight rows' scales of each block
};

// rows[a + 4l] for l < 4: 16-byte runs at `offset` -> out[q] lane r: dword q of row r
inline void transpose_runs(const uint8_t* const* rows, size_t offset, __m512i (&out)[4]) {
  __m512i v[4];
  auto run = [&](int r) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[r] + offset)); };
  for (int a = 0; a < 4; ++a) {  // 128-bit lane l of v[a]: row a + 4l (the lane an immediate: unrolled)
    v[a] = _mm512_castsi128_si512(run(a));
    v[a] = _mm512_inserti32x4(v[a], run(a + 4), 1);
    v[a] = _mm512_inserti32x4(v[a], run(a + 8), 2);
    v[a] = _mm512_inserti32x4(v[a], run(a + 12), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);  // lane 4l + a: row a + 4l
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// 16 weight rows' codes for inputs [k, k + 32) -> wv[j], j < 8: the quads that meet the activations' bytes 4j .. 4j + 3
template <int BITS>
inline void quads(const uint8_t* const* rows, int k, __m512i (&wv)[8]) {
  __m512i t[4];
  if constexpr (BITS == 8) {
    for (int h = 0; h < 2; ++h) {
      transpose_runs(rows, static_cast<size_t>(k) + 16 * h, t);
      for (int q = 0; q < 4; ++q) wv[4 * h + q] = t[q];
    }
  } else {
    transpose_runs(rows, static_cast<size_t>(k) / 2, t);
    const __m512i mask = _mm512_set1_epi8(0x0F);
    for (int q = 0; q < 4; ++q) {
      wv[q] = _mm512_and_si512(t[q], mask);
      wv[4 + q] = _mm512_and_si512(_mm512_srli_epi32(t[q], 4), mask);
    }
  }
}

// The weight rows the next pass reads (one per lane), fetched a share per 32 inputs: their codes and scales
struct NextRows {
  const char* codes[16];
  const char* scales[16];
  size_t code_lines, scale_lines;
  bool any;

  void fetch(int step, int steps) const {
    if (!any) return;
    const size_t c0 = code_lines * step / steps, c1 = code_lines * (step + 1) / steps;
    const size_t s0 = scale_lines * step / steps, s1 = scale_lines * (step + 1) / steps;
    for (int r = 0; r < 16; ++r) {
      for (size_t l = c0; l < c1; ++l) _mm_prefetch(codes[r] + 64 * l, _MM_HINT_T0);
      for (size_t l = s0; l < s1; ++l) _mm_prefetch(scales[r] + 64 * l, _MM_HINT_T0);
    }
  }
};

// MT activation rows (xq[i], xs[i], zp[i]: codes, scales, zero-point shares) x the 16 weight rows at w -> out[i]
template <int BITS, int MT>
inline void quad_tile(const QuantGemm& g, const int8_t* const* xq, const float* const* xs, const int32_t* const* zp,
                      const uint8_t* const* w, const float* ws_t, const NextRows& next, __m512 (&out)[MT]) {
  const int groups = g.K / g.B, chunks = g.B / 32, steps = g.K / 32;
  __m512 facc[MT];
  for (int i = 0; i < MT; ++i) facc[i] = _mm512_setzero_ps();
  for (int b = 0; b < groups; ++b) {
    __m512i iacc[MT];
    for (int i = 0; i < MT; ++i) iacc[i] = _mm512_set1_epi32(zp[i][b]);
    for (int c = 0; c < chunks; ++c) {
      const int k = b * g.B + c * 32;
      next.fetch(k / 32, steps);
      __m512i wv[8];
      quads<BITS>(w, k, wv);
      for (int j = 0; j < 8; ++j)  // rows inner: MT independent chains of dots; codes broadcast from memory
        for (int i = 0; i < MT; ++i)
          iacc[i] = _mm512_dpbusd_epi32(iacc[i], wv[j], _mm512_broadcastd_epi32(_mm_loadu_si32(xq[i] + k + 4 * j)));
    }
    const __m512 wsv = _mm512_loadu_ps(ws_t + 16 * b);
    for (int i = 0; i < MT; ++i)
      facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i]), _mm512_mul_ps(_mm512_set1_ps(xs[i][b]), wsv), facc[i]);
  }
  for (int i = 0; i < MT; ++i) out[i] = facc[i];
}

template <int BITS>
void gemm_quads(const QuantGemm& g) {
  thread_local QuadScratch s;
  const int groups = g.K / g.B;
  constexpr int32_t zp = 1 << (BITS - 1);
  s.zp_neg.resize(static_cast<size_t>(g.M) * groups);
  s.ws_t.resize(static_cast<size_t>(groups) * 16);
  for (int m = 0; m < g.M; ++m) {
    const int8_t* x = g.xq + static_cast<size_t>(g.idx[m]) * g.ldx;
    for (int b = 0; b < groups; ++b) {
      int32_t sum = 0;
      for (int k = b * g.B; k < (b + 1) * g.B; ++k) sum += x[k];
      s.zp_neg[static_cast<size_t>(m) * groups + b] = -zp * sum;
    }
  }
  const size_t row_bytes = static_cast<size_t>(g.K) * BITS / 8;
  const int passes = StreamRows<16>::passes(g.n0, g.n1);
  for (int p = 0; p < passes; ++p) {  // pass p: lane r reads row p of run r (StreamRows: 16 sequential streams)
    const StreamRows<16> sr(g.n0, g.n1, passes, p);
    const uint8_t* w[16];
    const uint8_t* scale_rows[16];
    for (int r = 0; r < 16; ++r) {
      w[r] = g.w + sr.row[r] * row_bytes;
      scale_rows[r] = reinterpret_cast<const uint8_t*>(g.ws + sr.row[r] * groups);
    }
    int b = 0;
    for (; b + 4 <= groups; b += 4) {  // the scales of 4 blocks at a time, turned like the codes
      __m512i t[4];
      transpose_runs(scale_rows, static_cast<size_t>(b) * sizeof(float), t);
      for (int q = 0; q < 4; ++q) _mm512_storeu_si512(s.ws_t.data() + static_cast<size_t>(b + q) * 16, t[q]);
    }
    for (; b < groups; ++b)
      for (int r = 0; r < 16; ++r)
        s.ws_t[static_cast<size_t>(b) * 16 + r] = reinterpret_cast<const float*>(scale_rows[r])[b];
    NextRows next{};
    next.any = p + 1 < passes;
    if (next.any) {
      const StreamRows<16> sn(g.n0, g.n1, passes, p + 1);
      next.code_lines = (row_bytes + 63) / 64;
      next.scale_lines = (groups * sizeof(float) + 63) / 64;
      for (int r = 0; r < 16; ++r) {
        next.codes[r] = reinterpret_cast<const char*>(g.w + sn.row[r] * row_bytes);
        next.scales[r] = reinterpret_cast<const char*>(g.ws + sn.row[r] * groups);
      }
    }
    auto tile = [&](auto mt, int m) {
      constexpr int MT = decltype(mt)::value;
      const int8_t* xq[MT];
      const float* xs[MT];
      const int32_t* zps[MT];
      impl::activation_rows<MT>(g, m, xq, xs);
      for (int i = 0; i < MT; ++i) zps[i] = s.zp_neg.data() + static_cast<size_t>(m + i) * groups;
      __m512 out[MT];
      quad_tile<BITS, MT>(g, xq, xs, zps, w, s.ws_t.data(), next, out);
      for (int i = 0; i < MT; ++i) {
        alignas(64) float lane[16];
        _mm512_store_ps(lane, out[i]);
        float* y = g.y + static_cast<size_t>(m + i) * g.ldy;
        for (int r = 0; r < 16; ++r)
          if (sr.col[r] >= 0) y[sr.col[r]] = lane[r];
      }
    };
    impl::row_tiles<kQuadRows>(g.M, tile);
  }
}

template <int BITS>
void gemm_quant(const QuantGemm& g) {
  if (g.M >= kQuadMinRows && g.B % 32 == 0) return gemm_quads<BITS>(g);
  if (g.B != 32) return impl::gemm_quant<Avx512, BITS>(g);
  thread_local std::vector<XPair> prepared;
  thread_local std::vector<int32_t> rows;
  const int blocks = g.K / 32, pairs = (blocks + 1) / 2;
  prepared.resize(static_cast<size_t>(g.M) * pairs);
  rows.resize(g.M);
  for (int i = 0; i < g.M; ++i) {
    rows[i] = i;
    const size_t r = static_cast<size_t>(g.idx[i]);
    for (int p = 0; p < pairs; ++p)
      prepared[static_cast<size_t>(i) * pairs + p] = x_pair<BITS>(g.xq + r * g.ldx, g.xs + r * g.ldxs, 2 * p, blocks);
  }
  QuantGemm pg = g;  // row i's XPairs at xq + i * ldx (the scales ride in them: xs unused, ldxs 0)
  pg.xq = reinterpret_cast<const int8_t*>(prepared.data());
  pg.ldx = static_cast<size_t>(pairs) * sizeof(XPair);
  pg.ldxs = 0;
  pg.idx = rows.data();
  gemm_q32<BITS>(pg);
}

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k = [] {
    Kernels table = impl::make_kernels<Avx512>("avx512");
    table.gemm_q8 = &gemm_quant<8>;
    table.gemm_q4 = &gemm_quant<4>;
    return table;
  }();
  return k;
}

}  // namespace mixtral_cpu
