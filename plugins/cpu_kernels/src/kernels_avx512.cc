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

// MR activation rows x NR weight rows, blocks of 32. PREPARED: xq[i] points to the row's XPair per pair of blocks
// (prepared once per call: gemm_quant), not to its int8 codes
template <int BITS, int MR, int NR, bool PREPARED>
inline void tile_q32(const QuantGemm& g, const int8_t* const* xq, const float* const* xs, const uint8_t* const* w,
                     const float* const* ws, const int* col, float* y) {
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
      const XPair xp = PREPARED ? reinterpret_cast<const XPair*>(xq[i])[b / 2] : x_pair<BITS>(xq[i], xs[i], b, blocks);
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
// rows per pass; more rows: four x four (16 accumulators, each weight vector used by four rows). Up to
// kPreparedRows rows, each row's XPairs are computed once per call into a per-thread scratch instead of once per
// four weight rows: a tile then spends, per 64 weights and (row, weight row) pair, the VNNI dot, the int32 -> float
// conversion, the scale product and the FMA, plus the weights' unpacking shared by its rows.
constexpr int kDecodeRows = 2, kDecodeNR = 4, kRowsMR = 4, kRowsNR = 4, kPreparedRows = 16;

template <int BITS, bool PREPARED>
void gemm_q32(const QuantGemm& g) {
  auto tiles = [&](auto mr_max, auto nr_max) {
    constexpr int MR = decltype(mr_max)::value, NR = decltype(nr_max)::value;
    impl::quant_gemm_loop<NR, MR, BITS>(g, [&](auto mr, auto xq, auto xs, auto w, auto ws, const int* col,
                                             float* y) {
      tile_q32<BITS, decltype(mr)::value, NR, PREPARED>(g, xq, xs, w, ws, col, y);
    });
  };
  if (g.M <= kDecodeRows)
    tiles(std::integral_constant<int, kDecodeRows>{}, std::integral_constant<int, kDecodeNR>{});
  else
    tiles(std::integral_constant<int, kRowsMR>{}, std::integral_constant<int, kRowsNR>{});
}

template <int BITS>
void gemm_quant(const QuantGemm& g) {
  if (g.B != 32) return impl::gemm_quant<Avx512, BITS>(g);
  if (g.M > kPreparedRows) return gemm_q32<BITS, false>(g);
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
  gemm_q32<BITS, true>(pg);
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
