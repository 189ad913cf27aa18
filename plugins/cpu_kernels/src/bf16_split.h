// bf16 weights against float32 activations through AVX512-BF16 (`vdpbf16ps`) dot products, shared by
// kernels_avx512bf16.cc and kernels_amx.cc (internal linkage: each compiles its own copy with its own flags).
//
// vdpbf16ps multiplies bf16 pairs exactly and accumulates in float32, but takes both operands in bf16. Rounding
// the activations to bf16 would cost ~2^-9 relative per product; instead each activation is split into two bf16
// parts, hi = bf16(x) and lo = bf16(x - hi) (round to nearest even; x - hi is exact in float32), and each weight
// pair is dotted with both: x differs from hi + lo by at most 2^-18 |x|, so the result stays within float32
// summation-order differences of the widened (bf16 -> float32) path's, at half the weight-side instructions
// (32 raw bf16 weights per register, no widening). Inputs and outputs of vdpbf16ps below 2^-126 are flushed to
// zero (irrelevant at activation and weight scales).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace mixtral_cpu {
namespace {
namespace bf16 {

inline int padded(int K) { return (K + 31) / 32 * 32; }

inline __m512 widen16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

// rows idx[0..M) of x -> hi[m * Kp + k], lo[m * Kp + k] (bf16 bits), zero for K <= k < Kp
inline void split_rows(const FloatGemm& g, int Kp, uint16_t* hi, uint16_t* lo) {
  for (int m = 0; m < g.M; ++m) {
    const float* x = g.x + static_cast<size_t>(g.idx[m]) * g.ldx;
    uint16_t* h = hi + static_cast<size_t>(m) * Kp;
    uint16_t* l = lo + static_cast<size_t>(m) * Kp;
    for (int k = 0; k < Kp; k += 16) {
      const int left = std::min(16, std::max(0, g.K - k));
      const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(mask, x + k);
      const __m256i vh = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
      const __m256i vl = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_sub_ps(v, widen16(vh))));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + k), vh);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(l + k), vl);
    }
  }
}

inline __m512 dot(__m512 acc, __m512i w, __m512i x) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(w), reinterpret_cast<__m512bh>(x));
}

// MR activation rows (split) x NR weight rows: y[i * ldy + col[j]] for the j with col[j] >= 0; hi and lo parts
// in their own accumulators (two independent chains per dot), added before the horizontal sum
template <int MR, int NR>
inline void tile(const uint16_t* const* hi, const uint16_t* const* lo, const uint16_t* const* w, int K,
                 const int* col, float* y, size_t ldy) {
  __m512 ah[MR][NR], al[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) ah[i][j] = al[i][j] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 32) {
    const int left = std::min(32, K - k);  // the weights' tail is masked (the activations are zero-padded)
    const __mmask32 mask = left == 32 ? ~0u : static_cast<__mmask32>((1u << left) - 1);
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_epi16(mask, w[j] + k);
    for (int i = 0; i < MR; ++i) {
      const __m512i xh = _mm512_loadu_si512(hi[i] + k), xl = _mm512_loadu_si512(lo[i] + k);
      for (int j = 0; j < NR; ++j) {
        ah[i][j] = dot(ah[i][j], wv[j], xh);
        al[i][j] = dot(al[i][j], wv[j], xl);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      if (col[j] >= 0) y[i * ldy + col[j]] = _mm512_reduce_add_ps(_mm512_add_ps(ah[i][j], al[i][j]));
}

struct Scratch {
  std::vector<uint16_t> hi, lo;
};

// y[m, n - n0] for weight rows [n0, n1) on the split activations (hi, lo: M rows of Kp); a pass's NR weight rows
// read as NR separate streams (StreamRows, kernels.h), as gemm_impl.h's gemm_float reads them
inline void gemm_split(const FloatGemm& g, const uint16_t* hi, const uint16_t* lo, int Kp) {
  constexpr int MR = 2, NR = 4;
  const uint16_t* weights = static_cast<const uint16_t*>(g.w);
  const int passes = StreamRows<NR>::passes(g.n0, g.n1);
  for (int p = 0; p < passes; ++p) {
    const StreamRows<NR> s(g.n0, g.n1, passes, p);
    const uint16_t* w[NR];
    for (int j = 0; j < NR; ++j) w[j] = weights + s.row[j] * g.K;
    const int* col = s.col;
    float* y = g.y;
    int m = 0;
    for (; m + MR <= g.M; m += MR) {
      const uint16_t* h[MR] = {hi + static_cast<size_t>(m) * Kp, hi + static_cast<size_t>(m + 1) * Kp};
      const uint16_t* l[MR] = {lo + static_cast<size_t>(m) * Kp, lo + static_cast<size_t>(m + 1) * Kp};
      tile<MR, NR>(h, l, w, g.K, col, y + static_cast<size_t>(m) * g.ldy, g.ldy);
    }
    if (m < g.M) {
      const uint16_t* h[1] = {hi + static_cast<size_t>(m) * Kp};
      const uint16_t* l[1] = {lo + static_cast<size_t>(m) * Kp};
      tile<1, NR>(h, l, w, g.K, col, y + static_cast<size_t>(m) * g.ldy, g.ldy);
    }
  }
}

// split the activations into the calling thread's scratch, then every (row, weight row) dot
inline void gemm(const FloatGemm& g) {
  if (g.M <= 0 || g.n1 <= g.n0) return;
  thread_local Scratch s;
  const int Kp = padded(g.K);
  s.hi.resize(static_cast<size_t>(g.M) * Kp);
  s.lo.resize(static_cast<size_t>(g.M) * Kp);
  split_rows(g, Kp, s.hi.data(), s.lo.data());
  gemm_split(g, s.hi.data(), s.lo.data(), Kp);
}

}  // namespace bf16
}  // namespace
}  // namespace mixtral_cpu
