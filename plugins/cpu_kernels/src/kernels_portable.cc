// Portable C++ kernels (any CPU; the compiler vectorizes what the baseline ISA allows) and the activation
// quantization every ISA shares. Compiled with -ffp-contract=off so quantize_rows rounds as the reference does.
#include <cmath>

#include "gemm_impl.h"

namespace mixtral_cpu {
namespace {

struct Portable {
  static constexpr int W = 8, MR_F = 2, NR_F = 2, MR_Q = 2, NR_Q = 2;
  struct F { float v[8]; };
  static F zero() { return F{}; }
  static F load(const float* p) { F f; for (int l = 0; l < 8; ++l) f.v[l] = p[l]; return f; }
  static F loadw(const float* p) { return load(p); }
  static F loadw(const uint16_t* p) { F f; for (int l = 0; l < 8; ++l) f.v[l] = impl::widen(p[l]); return f; }
  static F bcast(float a) { F f; for (int l = 0; l < 8; ++l) f.v[l] = a; return f; }
  static void store(float* p, F a) { for (int l = 0; l < 8; ++l) p[l] = a.v[l]; }
  static F exp_nonpositive(F x) { for (int l = 0; l < 8; ++l) x.v[l] = std::exp(x.v[l]); return x; }
  static F add(F a, F b) { for (int l = 0; l < 8; ++l) a.v[l] += b.v[l]; return a; }
  static F sub(F a, F b) { for (int l = 0; l < 8; ++l) a.v[l] -= b.v[l]; return a; }
  static F fma(F a, F b, F c) { for (int l = 0; l < 8; ++l) c.v[l] += a.v[l] * b.v[l]; return c; }
  static float hsum(F a) {  // pairwise, as the SIMD reductions
    const float s0 = (a.v[0] + a.v[4]) + (a.v[2] + a.v[6]), s1 = (a.v[1] + a.v[5]) + (a.v[3] + a.v[7]);
    return s0 + s1;
  }

  struct I { int32_t v[8]; };
  struct Q { int8_t v[32]; };
  using F8 = F;
  static constexpr bool kUnsignedCodes = false;
  static I izero() { return I{}; }
  static I isub(I a, I b) { for (int l = 0; l < 8; ++l) a.v[l] -= b.v[l]; return a; }
  static Q load_q8(const uint8_t* p) { Q q; for (int l = 0; l < 32; ++l) q.v[l] = static_cast<int8_t>(p[l] - 128); return q; }
  static Q load_q4(const uint8_t* p) {
    Q q;
    for (int l = 0; l < 16; ++l) {
      q.v[l] = static_cast<int8_t>((p[l] & 0x0F) - 8);
      q.v[16 + l] = static_cast<int8_t>((p[l] >> 4) - 8);
    }
    return q;
  }
  static Q load_x(const int8_t* p) { Q q; for (int l = 0; l < 32; ++l) q.v[l] = p[l]; return q; }
  static I dot(I acc, Q w, Q x) {
    for (int l = 0; l < 8; ++l)
      for (int b = 0; b < 4; ++b) acc.v[l] += static_cast<int32_t>(w.v[4 * l + b]) * x.v[4 * l + b];
    return acc;
  }
  static F8 cvt(I a) { F f; for (int l = 0; l < 8; ++l) f.v[l] = static_cast<float>(a.v[l]); return f; }
  static F8 zero8() { return F{}; }
  static F8 fma8(F8 a, float s, F8 c) { for (int l = 0; l < 8; ++l) c.v[l] += a.v[l] * s; return c; }
  static float hsum8(F8 a) { return hsum(a); }
};

}  // namespace

const Kernels& kernels_portable() {
  static const Kernels k = impl::make_kernels<Portable>("portable");
  return k;
}

void quantize_rows(const float* x, size_t ldx, int M, int K, int B, bool perm4, int8_t* q, size_t ldq, float* s,
                   size_t lds) {
  for (int m = 0; m < M; ++m) {
    const float* row = x + static_cast<size_t>(m) * ldx;
    int8_t* out = q + static_cast<size_t>(m) * ldq;
    for (int b = 0; b * B < K; ++b) {
      float amax = 0.f;
      for (int k = b * B; k < (b + 1) * B; ++k) {  // fmax without its libm call (amax is never NaN)
        const float a = std::fabs(row[k]);
        amax = a > amax ? a : amax;
      }
      const float scale = amax / 127.f, inverse = amax > 0.f ? 1.f / scale : 0.f;
      s[static_cast<size_t>(m) * lds + b] = scale;
      for (int k = b * B; k < (b + 1) * B; ++k) {
        // |v| <= 127: adding and subtracting 1.5 * 2^23 rounds it half to even (as nearbyint, without libm)
        const float v = row[k] * inverse, code = (v + 12582912.f) - 12582912.f;
        const int r = k % 32, base = k - r;  // int4: each 32-chunk's even elements, then its odd ones
        out[perm4 ? base + (r % 2 ? 16 + r / 2 : r / 2) : k] = static_cast<int8_t>(code);
      }
    }
  }
}

}  // namespace mixtral_cpu
