// The attention kernel of kernels.h (AttendGroup) written once over a SIMD traits class V (gemm_impl.h's, with
// bcast, store, add, sub and exp_nonpositive), instantiated by kernels_<isa>.cc through make_kernels.
// m queries, R query heads sharing one kv head, n union slots, D head_dim.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace mixtral_cpu {
// internal linkage, as gemm_impl.h: each ISA's file compiles its own copy
namespace {
namespace impl {


// s[j] = exp(s[j] - top) for s[j] <= top (-inf gives 0), returning their sum: V::exp_nonpositive on whole vectors
// (the ISA's polynomial, within 2e-7 relative of expf) summed lane-wise, std::exp on the tail
template <class V>
inline float exp_row(float* s, int n, float top) {
  const typename V::F shift = V::bcast(top);
  typename V::F acc = V::zero();
  int j = 0;
  for (; j + V::W <= n; j += V::W) {
    const typename V::F e = V::exp_nonpositive(V::sub(V::load(s + j), shift));
    V::store(s + j, e);
    acc = V::add(acc, e);
  }
  float sum = V::hsum(acc);
  for (; j < n; ++j) sum += s[j] = std::exp(s[j] - top);
  return sum;
}

// Each key row is read once for the block's m x R scores; each query's own list is walked beside the union (both
// ascending), so whether query i sees union slot j costs one comparison (a slot it does not see scores -inf: exp
// gives 0). Each head's softmax subtracts its largest score (exp <= 1, the sum >= 1: every query sees a slot).
template <class V>
void attend(const AttendGroup& g) {
  const int n = g.n, m = g.m, R = g.R, D = g.D;
  // scores: q [m R, D] against each run of consecutive union slots (the key rows as stored: one FloatGemm, the
  // table's float32 kernel, amx tiles for 16+ rows), then -inf where a query does not see a slot (0 for a query
  // that sees nothing: every slot, uniformly)
  static thread_local int32_t rows[kMaxAttendQueries * kMaxAttendHeads];
  for (int h = 0; h < m * R; ++h) rows[h] = h;
  for (int j0 = 0; j0 < n;) {
    int j1 = j0 + 1;
    while (j1 < n && g.idx[j1] == g.idx[j1 - 1] + 1) ++j1;
    g.gemm(FloatGemm{g.q, static_cast<size_t>(D), rows, m * R, g.k + static_cast<size_t>(g.idx[j0]) * g.ldk, D, 0,
                     j1 - j0, g.scores + j0, static_cast<size_t>(n)});
    j0 = j1;
  }
  float top[kMaxAttendQueries * kMaxAttendHeads];  // each (query, head)'s largest score
  for (int i = 0; i < m; ++i) {
    float* s = g.scores + static_cast<size_t>(i) * R * n;
    if (g.lists[i] == nullptr) {
      for (size_t e = 0; e < static_cast<size_t>(R) * n; ++e) s[e] = 0.f;
      for (int r = 0; r < R; ++r) top[i * R + r] = 0.f;
      continue;
    }
    for (int j = 0, at = 0; j < n; ++j) {
      if (at < g.counts[i] && g.lists[i][at] == g.idx[j]) {
        ++at;
        continue;
      }
      for (int r = 0; r < R; ++r) s[static_cast<size_t>(r) * n + j] = -INFINITY;
    }
    for (int r = 0; r < R; ++r) {
      const float* row = s + static_cast<size_t>(r) * n;
      float best[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};  // four chains: the compares overlap
      int j = 0;
      for (; j + 4 <= n; j += 4)
        for (int c = 0; c < 4; ++c) best[c] = row[j + c] > best[c] ? row[j + c] : best[c];
      for (; j < n; ++j) best[0] = row[j] > best[0] ? row[j] : best[0];
      top[i * R + r] = std::max(std::max(best[0], best[1]), std::max(best[2], best[3]));
    }
  }
  float inverse[kMaxAttendQueries * kMaxAttendHeads];  // each (query, head)'s 1 / sum
  for (int h = 0; h < m * R; ++h) {
    inverse[h] = 1.f / exp_row<V>(g.scores + static_cast<size_t>(h) * n, n, top[h]);
    float* out = g.out + static_cast<size_t>(h / R) * g.ldo + (h % R) * D;
    for (int d = 0; d < D; ++d) out[d] = 0.f;
  }
  // weighted sums in tiles of kTile slots: each (query, head)'s output slice of up to 4 vectors stays in registers
  // over the tile (the tile's value rows in L1); every output element sums its slots in ascending order
  constexpr int kTile = 64;
  for (int j0 = 0; j0 < n; j0 += kTile) {
    const int j1 = j0 + kTile < n ? j0 + kTile : n;
    for (int h = 0; h < m * R; ++h) {
      const float* p = g.scores + static_cast<size_t>(h) * n;
      float* out = g.out + static_cast<size_t>(h / R) * g.ldo + (h % R) * D;
      int d = 0;
      for (; d + 4 * V::W <= D; d += 4 * V::W) {
        typename V::F acc[4];
        for (int c = 0; c < 4; ++c) acc[c] = V::load(out + d + c * V::W);
        for (int j = j0; j < j1; ++j) {
          if (p[j] == 0.f) continue;
          const typename V::F w = V::bcast(p[j]);
          const float* value = g.v + static_cast<size_t>(g.idx[j]) * g.ldk + d;
          for (int c = 0; c < 4; ++c) acc[c] = V::fma(w, V::load(value + c * V::W), acc[c]);
        }
        for (int c = 0; c < 4; ++c) V::store(out + d + c * V::W, acc[c]);
      }
      for (; d + V::W <= D; d += V::W) {
        typename V::F acc = V::load(out + d);
        for (int j = j0; j < j1; ++j)
          if (p[j] != 0.f) acc = V::fma(V::bcast(p[j]), V::load(g.v + static_cast<size_t>(g.idx[j]) * g.ldk + d), acc);
        V::store(out + d, acc);
      }
      for (; d < D; ++d)
        for (int j = j0; j < j1; ++j) out[d] += p[j] * g.v[static_cast<size_t>(g.idx[j]) * g.ldk + d];
    }
  }
  for (int h = 0; h < m * R; ++h) {
    float* out = g.out + static_cast<size_t>(h / R) * g.ldo + (h % R) * D;
    for (int d = 0; d < D; ++d) out[d] *= inverse[h];
  }
}

}  // namespace impl
}  // namespace
}  // namespace mixtral_cpu
