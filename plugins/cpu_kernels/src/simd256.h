// The 256-bit integer half of the AVX2 and AVX-512 traits (gemm_impl.h): int8 / int4 weight loads, int8
// activations, int32 -> float lanes. Included by kernels_avx2.cc and kernels_avx512.cc only (internal linkage:
// each compiles its own copy with its own flags); their `dot` differs (maddubs/madd vs VNNI).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace mixtral_cpu {
namespace {

struct Simd256Quant {
  using I = __m256i;
  using Q = __m256i;
  using F8 = __m256;
  static constexpr bool kUnsignedCodes = false;  // weights as signed int8: codes minus the zero point
  static I izero() { return _mm256_setzero_si256(); }
  static I isub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static Q load_q8(const uint8_t* p) {  // code - 128 as int8
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi8(-128));
  }
  static Q load_q4(const uint8_t* p) {  // 16 bytes -> 32 nibbles - 8: the low nibbles (even k), then the high
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
  }
  static Q load_x(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static F8 cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static F8 zero8() { return _mm256_setzero_ps(); }
  static F8 fma8(F8 a, float s, F8 c) { return _mm256_fmadd_ps(a, _mm256_set1_ps(s), c); }
  static float hsum8(F8 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace
}  // namespace mixtral_cpu
