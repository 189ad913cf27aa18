// The attention kernel of kernels.h (AttendGroup) written once over a SIMD traits class V (gemm_impl.h's, with
// bcast and store), instantiated by kernels_<isa>.cc through make_kernels.
// R query heads sharing one kv head, n listed slots, D head_dim.
#pragma once

#include <cmath>
#include <cstddef>

#include "kernels.h"

namespace mixtral_cpu {
// internal linkage, as gemm_impl.h: each ISA's file compiles its own copy
namespace {
namespace impl {

// a . b over D floats: V::W lanes at a time, then the tail in order
template <class V>
inline float dot(const float* a, const float* b, int D) {
  typename V::F acc = V::zero();
  int d = 0;
  for (; d + V::W <= D; d += V::W) acc = V::fma(V::load(a + d), V::load(b + d), acc);
  float sum = V::hsum(acc);
  for (; d < D; ++d) sum += a[d] * b[d];
  return sum;
}

// y += a * x over D floats
template <class V>
inline void axpy(float a, const float* x, float* y, int D) {
  const typename V::F av = V::bcast(a);
  int d = 0;
  for (; d + V::W <= D; d += V::W) V::store(y + d, V::fma(av, V::load(x + d), V::load(y + d)));
  for (; d < D; ++d) y[d] += a * x[d];
}

// Each listed key row is read once for the R heads (their scores), each value row once for the R outputs: no
// copy of K or V per query head. The softmax subtracts each head's largest score (exp <= 1, the sum >= 1).
template <class V>
void attend(const AttendGroup& g) {
  const int n = g.n, R = g.R, D = g.D;
  for (int j = 0; j < n; ++j) {
    const float* key = g.k + static_cast<size_t>(g.idx[j]) * g.ldk;
    for (int r = 0; r < R; ++r) g.scores[static_cast<size_t>(r) * n + j] = g.uniform ? 0.f : dot<V>(g.q + r * D, key, D);
  }
  float inverse[64];  // R <= 64 (RaggedAttention checks num_heads / kv_num_heads)
  for (int r = 0; r < R; ++r) {
    float* s = g.scores + static_cast<size_t>(r) * n;
    float top = s[0];
    for (int j = 1; j < n; ++j) top = s[j] > top ? s[j] : top;
    float sum = 0.f;
    for (int j = 0; j < n; ++j) {
      s[j] = std::exp(s[j] - top);
      sum += s[j];
    }
    inverse[r] = 1.f / sum;
    for (int d = 0; d < D; ++d) g.out[r * D + d] = 0.f;
  }
  for (int j = 0; j < n; ++j) {
    const float* value = g.v + static_cast<size_t>(g.idx[j]) * g.ldk;
    for (int r = 0; r < R; ++r) axpy<V>(g.scores[static_cast<size_t>(r) * n + j], value, g.out + r * D, D);
  }
  for (int r = 0; r < R; ++r)
    for (int d = 0; d < D; ++d) g.out[r * D + d] *= inverse[r];
}

}  // namespace impl
}  // namespace
}  // namespace mixtral_cpu
