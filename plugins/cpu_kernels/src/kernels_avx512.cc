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
  // u8 x s8 dot of |w| with x carrying w's sign: exact, each int32 lane the sum of 4 adjacent products
  static I dot(I acc, Q w, Q x) { return _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(x, w)); }
};

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k = impl::make_kernels<Avx512>("avx512");
  return k;
}

}  // namespace mixtral_cpu
