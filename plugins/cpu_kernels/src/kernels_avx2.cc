// AVX2 + FMA kernels (int8 dots through maddubs / madd). Compiled with -mavx2 -mfma; called only where cpuid
// says the CPU has them (isa.cc).
#include <immintrin.h>

#include "gemm_impl.h"

namespace mixtral_cpu {
namespace {

struct Avx2 {
  static constexpr int W = 8, MR_F = 2, NR_F = 4, MR_Q = 2, NR_Q = 2;
  using F = __m256;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F loadw(const float* p) { return _mm256_loadu_ps(p); }
  static F loadw(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(F a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  using I = __m256i;
  using Q = __m256i;
  using F8 = __m256;
  static I izero() { return _mm256_setzero_si256(); }
  static Q load_q8(const uint8_t* p) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi8(-128));
  }
  static Q load_q4(const uint8_t* p) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
  }
  static Q load_x(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  // |w| * (x with w's sign): pairs into int16 (at most 2 * 128 * 127, no saturation), then 4-byte groups to int32
  static I dot(I acc, Q w, Q x) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static F8 cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static F8 zero8() { return _mm256_setzero_ps(); }
  static F8 fma8(F8 a, float s, F8 c) { return _mm256_fmadd_ps(a, _mm256_set1_ps(s), c); }
  static float hsum8(F8 a) { return hsum(a); }
};

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k = impl::make_kernels<Avx2>("avx2");
  return k;
}

}  // namespace mixtral_cpu
