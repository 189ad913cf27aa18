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
