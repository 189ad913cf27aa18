#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mixtral_cpu {
namespace {
constexpr size_t kListBytes = size_t{1} << 16;  // visibility bytes per pass-1 work item
}  // namespace

void ragged_attention_forward(const Kernels& kernels, const RaggedAttentionArgs& a, Parallel& parallel) {
  const size_t queries = static_cast<size_t>(a.B) * a.T, S = static_cast<size_t>(a.S);
  if (queries == 0) return;
  // pass 1: each query's visible slots, in order ([queries, S] slot lists, counts [queries])
  std::vector<int32_t> slots(queries * S);
  std::vector<int> counts(queries);
  // in chunks of ~kListBytes of visibility (one chunk, on the calling thread, for a decode step's few rows)
  const size_t per_chunk = std::max<size_t>(1, kListBytes / std::max<size_t>(S, 1));
  auto list = [&](size_t chunk) {
    for (size_t i = chunk * per_chunk; i < std::min(queries, (chunk + 1) * per_chunk); ++i) {
      const bool* row = a.visible + i * S;
      int32_t* out = slots.data() + i * S;
      int n = 0;
      for (size_t s = 0; s < S; ++s)
        if (row[s]) out[n++] = static_cast<int32_t>(s);
      counts[i] = n;  // 0: nothing visible (every slot, uniformly: below)
    }
  };
  parallel_for(parallel, (queries + per_chunk - 1) / per_chunk, list);
  // pass 2: (block of up to kBlock queries of one batch row, kv head) items; each rotates and scales its queries'
  // R heads, merges their slot lists (every slot where one of them sees nothing) and attends
  const int R = a.H / a.G, D = a.D, half = D / 2;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  const size_t blocks_per_row = (static_cast<size_t>(a.T) + kBlock - 1) / kBlock;
  auto attend = [&](size_t item) {
    const size_t block = item / a.G;
    const int g = static_cast<int>(item % a.G), b = static_cast<int>(block / blocks_per_row);
    const size_t first = static_cast<size_t>(b) * a.T + (block % blocks_per_row) * kBlock;  // query index
    const int m = static_cast<int>(std::min<size_t>(kBlock, static_cast<size_t>(b + 1) * a.T - first));
    thread_local std::vector<float> scratch;
    thread_local std::vector<int32_t> merged;
    thread_local std::vector<uint8_t> marks;
    scratch.resize(static_cast<size_t>(m) * R * (D + S));
    float* q = scratch.data();
    const int32_t* lists[kBlock];
    bool everything = false;
    for (int i = 0; i < m; ++i) {
      const size_t query = first + i;
      lists[i] = counts[query] ? slots.data() + query * S : nullptr;
      everything |= counts[query] == 0;
      const int64_t p = a.position[query];
      const float* c = a.cos + p * half;
      const float* sn = a.sin + p * half;
      for (int r = 0; r < R; ++r) {
        const float* src = a.q + (query * a.H + static_cast<size_t>(g) * R + r) * D;
        float* dst = q + (static_cast<size_t>(i) * R + r) * D;
        for (int d = 0; d < half; ++d) {  // rotate-half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
          dst[d] = (src[d] * c[d] - src[d + half] * sn[d]) * scale;
          dst[d + half] = (src[d + half] * c[d] + src[d] * sn[d]) * scale;
        }
      }
    }
    merged.resize(S);
    int n = 0;
    if (everything || m == 1) {  // every slot, or the one query's own list
      n = everything ? a.S : counts[first];
      const int32_t* from = everything ? nullptr : lists[0];
      for (int j = 0; j < n; ++j) merged[j] = from ? from[j] : j;
    } else {
      marks.assign(S, 0);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < counts[first + i]; ++j) marks[lists[i][j]] = 1;
      for (size_t s = 0; s < S; ++s)
        if (marks[s]) merged[n++] = static_cast<int32_t>(s);
    }
    const size_t head = (static_cast<size_t>(b) * a.G + g) * S * D;
    AttendGroup group{q, a.k + head, a.v + head, static_cast<size_t>(D), merged.data(), lists, counts.data() + first,
                      n, m, R, D, q + static_cast<size_t>(m) * R * D,
                      a.out + (first * a.H + static_cast<size_t>(g) * R) * D, static_cast<size_t>(a.H) * D,
                      kernels.gemm_f32};
    kernels.attend(group);
  };
  parallel_for(parallel, static_cast<size_t>(a.B) * blocks_per_row * a.G, attend);
}

}  // namespace mixtral_cpu
