// AVX-512 (F, BW, VL) float / bf16 kernels, 256-bit AVX512-VNNI int8 dots. Compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512vnni -mfma; called only where cpuid says the CPU has them (isa.cc).
#include <immintrin.h>

#include "gemm_impl.h"

namespace mixtral_cpu {
namespace {

struct Avx512 {
  static constexpr int W = 16, MR_F = 4, NR_F = 4, MR_Q = 4, NR_Q = 2;
  using F = __m512;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F loadw(const float* p) { return _mm512_loadu_ps(p); }
  static F loadw(const uint16_t* p) {  // 16 bf16 -> float32: the bits shifted into the high half
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(F a) { return _mm512_reduce_add_ps(a); }

  using I = __m256i;
  using Q = __m256i;
  using F8 = __m256;
  static I izero() { return _mm256_setzero_si256(); }
  static Q load_q8(const uint8_t* p) {  // code - 128 as int8
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi8(-128));
  }
  static Q load_q4(const uint8_t* p) {  // 16 bytes -> 32 nibbles - 8: the low nibbles (even k), then the high
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
  }
  static Q load_x(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  // u8 x s8 dot of |w| with x carrying w's sign: exact, each int32 lane the sum of 4 adjacent products
  static I dot(I acc, Q w, Q x) { return _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(x, w)); }
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

const Kernels& kernels_avx512() {
  static const Kernels k = impl::make_kernels<Avx512>("avx512");
  return k;
}

}  // namespace mixtral_cpu
