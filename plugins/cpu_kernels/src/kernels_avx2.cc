// AVX2 + FMA kernels (int8 dots through maddubs / madd). Compiled with -mavx2 -mfma; called only where cpuid
// says the CPU has them (isa.cc).
#include <immintrin.h>

#include "gemm_impl.h"
#include "simd256.h"

namespace mixtral_cpu {
namespace {

struct Avx2 : Simd256Quant {
  static constexpr int W = 8, MR_F = 2, NR_F = 4, MR_Q = 2, NR_Q = 2;
  using F = __m256;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F loadw(const float* p) { return _mm256_loadu_ps(p); }
  static F loadw(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static F bcast(float a) { return _mm256_set1_ps(a); }
  static void store(float* p, F a) { _mm256_storeu_ps(p, a); }
  // exp(x) for x <= 0, as Avx512's (2^k built in the exponent bits)
  static F exp_nonpositive(F x) {
    const F live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.f), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
    const F k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    F p = _mm256_set1_ps(1.f / 720);
    for (const float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), live);
  }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(F a) { return hsum8(a); }
  // |w| * (x with w's sign): pairs into int16 (at most 2 * 128 * 127, no saturation), then 4-byte groups to int32
  static I dot(I acc, Q w, Q x) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
};

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k = impl::make_kernels<Avx2>("avx2");
  return k;
}

}  // namespace mixtral_cpu
