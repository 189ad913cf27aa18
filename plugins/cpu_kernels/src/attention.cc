#include "attention.h"

#include <cmath>
#include <cstddef>
#include <vector>

namespace mixtral_cpu {

void ragged_attention_forward(const Kernels& kernels, const RaggedAttentionArgs& a, Parallel& parallel) {
  const size_t queries = static_cast<size_t>(a.B) * a.T, S = static_cast<size_t>(a.S);
  if (queries == 0) return;
  // pass 1: each query's visible slots, in order ([queries, S] slot lists, counts [queries])
  std::vector<int32_t> slots(queries * S);
  std::vector<int> counts(queries);
  auto list = [&](size_t i) {
    const bool* row = a.visible + i * S;
    int32_t* out = slots.data() + i * S;
    int n = 0;
    for (size_t s = 0; s < S; ++s)
      if (row[s]) out[n++] = static_cast<int32_t>(s);
    if (n == 0)  // nothing visible: every slot, uniformly (below)
      for (size_t s = 0; s < S; ++s) out[s] = static_cast<int32_t>(s);
    counts[i] = n;
  };
  parallel_for(parallel, queries, list);
  // pass 2: (query, kv head) items; each rotates and scales its R query heads, then attends
  const int R = a.H / a.G, D = a.D, half = D / 2;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  auto attend = [&](size_t item) {
    const size_t i = item / a.G;
    const int g = static_cast<int>(item % a.G), b = static_cast<int>(i / a.T);
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(R) * (D + S));
    float* q = scratch.data();
    const int64_t p = a.position[i];
    const float* c = a.cos + p * half;
    const float* sn = a.sin + p * half;
    for (int r = 0; r < R; ++r) {
      const float* src = a.q + (i * a.H + static_cast<size_t>(g) * R + r) * D;
      float* dst = q + r * D;
      for (int d = 0; d < half; ++d) {  // rotate-half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
        dst[d] = (src[d] * c[d] - src[d + half] * sn[d]) * scale;
        dst[d + half] = (src[d + half] * c[d] + src[d] * sn[d]) * scale;
      }
    }
    const size_t head = (static_cast<size_t>(b) * a.G + g) * S * D;
    AttendGroup group{q, a.k + head, a.v + head, static_cast<size_t>(D), slots.data() + i * S,
                      counts[i] ? counts[i] : a.S, R, D, counts[i] == 0, q + static_cast<size_t>(R) * D,
                      a.out + (i * a.H + static_cast<size_t>(g) * R) * D};
    kernels.attend(group);
  };
  parallel_for(parallel, queries * a.G, attend);
}

}  // namespace mixtral_cpu
