// RaggedAttention's forward pass (attention.cc): each query attends over the key slots its visibility row lists,
// with grouped-query heads (R = H / G query heads read each kv head in place: no expanded copy of K or V).
// B batch, T queries, S key slots, H query heads, G kv heads, D head_dim, C rotary table rows.
#pragma once

#include <cstdint>

#include "kernels.h"
#include "moe.h"  // Parallel

namespace mixtral_cpu {

constexpr int kMaxHeadsPerKv = kMaxAttendHeads;  // R
constexpr int kBlock = 8;                         // queries per work item
static_assert(kBlock <= kMaxAttendQueries, "AttendGroup takes at most kMaxAttendQueries queries");

struct RaggedAttentionArgs {
  const float* q;          // [B, T, H * D] the projection's output, not yet rotated
  const float* k;          // [B, G, S, D] keys (rotated), the present cache
  const float* v;          // [B, G, S, D]
  const bool* visible;     // [B, T, S] True: query t sees slot s
  const int64_t* position; // [B, T] each query's position (its rotary angle), 0 <= position < C
  const float* cos;        // [C, D / 2] rotate-half tables: angle of pair i at row p
  const float* sin;
  int B, T, S, H, G, D;
  float* out;              // [B, T, H * D]
};

// out = softmax(rope(q) kᵀ D^-0.5 over each query's visible slots) v, float32. A query with no visible slot gets
// the mean of every slot's value (what the canonical graph's finite -3.4e38 bias gives it), never NaN. Pass 1
// lists each query's visible slots (its row read once), pass 2 runs one work item per (block of kBlock queries of
// one batch row, kv head), which reads each key and value row of the block's slots once (K / V traffic: one pass
// per block, not per query). Blocks are fixed by T, not by the thread split: 1 to 4 threads give identical results.
void ragged_attention_forward(const Kernels& kernels, const RaggedAttentionArgs& a, Parallel& parallel);

}  // namespace mixtral_cpu
