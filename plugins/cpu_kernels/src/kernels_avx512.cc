// AVX-512 (F, BW, VL) float / bf16 kernels, 256-bit AVX512-VNNI int8 dots. Compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512vnni -mfma; called only where cpuid says the CPU has them (isa.cc).
#include <immintrin.h>

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

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k = impl::make_kernels<Avx512>("avx512");
  return k;
}

}  // namespace mixtral_cpu
