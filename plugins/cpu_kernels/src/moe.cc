// The fused MoE layer. Work is split by output rows of every routed expert (gate/up rows, then down rows),
// in equal chunks over ONNX Runtime's threads, so each thread reads about the same weight bytes whatever the
// routing; every output element is computed by one thread in a fixed order (same result for any thread count).
#include "moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace mixtral_cpu {
namespace {

struct Item {  // rows [r0, r1) of routed expert e
  int e, r0, r1;
};

// rows [0, rows) of every routed expert in chunks: at most ~64 items, each a multiple of `align` rows
std::vector<Item> split_rows(const std::vector<int>& routed, int rows, int align) {
  const long total = static_cast<long>(routed.size()) * rows;
  long chunk = std::max<long>(align, (total + 63) / 64);
  chunk = (chunk + align - 1) / align * align;
  std::vector<Item> items;
  for (int e : routed)
    for (long r = 0; r < rows; r += chunk) items.push_back({e, static_cast<int>(r), static_cast<int>(std::min<long>(r + chunk, rows))});
  return items;
}

struct Scratch {  // per calling thread, reused across calls
  std::vector<int32_t> tokens, iota, pair_of;
  std::vector<float> pair_weight, act, up, y, xs, as;
  std::vector<int8_t> xq, aq;
};

}  // namespace

void moe_forward(const Kernels& kernels, const MoEWeights& w, int top_k, const float* x, const float* router_logits,
                 int T, float* out, Parallel& parallel) {
  if (T <= 0) return;
  const int E = w.E, H = w.H, I = w.I, k = top_k, B = w.B;
  const size_t P = static_cast<size_t>(T) * k;
  const bool quant = w.kind == WeightKind::q8 || w.kind == WeightKind::q4, q4 = w.kind == WeightKind::q4;
  thread_local Scratch scratch;  // the caller's; the lambdas below reach it through this reference
  Scratch& s = scratch;

  // routing: top-k logits per token (ties to the lower expert), softmax over them
  std::vector<int> chosen(P), counts(E, 0);
  std::vector<float> weight(P);
  std::vector<int> order(E);
  for (int t = 0; t < T; ++t) {
    const float* logits = router_logits + static_cast<size_t>(t) * E;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [logits](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    const float top = logits[order[0]];
    float sum = 0.f;
    for (int j = 0; j < k; ++j) sum += (weight[t * k + j] = std::exp(logits[order[j]] - top));
    for (int j = 0; j < k; ++j) {
      weight[t * k + j] /= sum;
      chosen[t * k + j] = order[j];
      ++counts[order[j]];
    }
  }
  // pairs grouped by expert (tokens ascending): pair p of expert e at offset[e] + its rank
  std::vector<int> offset(E + 1, 0), fill(E, 0), routed;
  for (int e = 0; e < E; ++e) {
    offset[e + 1] = offset[e] + counts[e];
    if (counts[e]) routed.push_back(e);
  }
  s.tokens.resize(P);
  s.pair_of.resize(P);
  s.iota.resize(P);
  std::iota(s.iota.begin(), s.iota.end(), 0);
  for (size_t q = 0; q < P; ++q) {
    const int e = chosen[q], p = offset[e] + fill[e]++;
    s.tokens[p] = static_cast<int32_t>(q / k);
    s.pair_of[q] = p;
  }

  const size_t xgroups = quant ? H / B : 0, agroups = quant ? I / B : 0;
  if (quant) {  // the tokens' activations to int8, once for all their experts
    s.xq.resize(static_cast<size_t>(T) * H);
    s.xs.resize(static_cast<size_t>(T) * xgroups);
    auto body = [&](size_t i) {
      const int t0 = static_cast<int>(i) * 16, n = std::min(16, T - t0);
      quantize_rows(x + static_cast<size_t>(t0) * H, H, n, H, B, q4, s.xq.data() + static_cast<size_t>(t0) * H, H,
                    s.xs.data() + t0 * xgroups, xgroups);
    };
    parallel_for(parallel, (T + 15) / 16, body);
  }

  // gate/up: act[p, j] = silu(x_t . w1_e[j]) * (x_t . w3_e[j]); items of rows j of each routed expert
  s.act.resize(P * I);
  s.up.resize(P * I);
  if (quant) {
    s.aq.resize(P * I);
    s.as.resize(P * agroups);
  }
  const int bits = q4 ? 4 : 8;
  const size_t w13_row = quant ? static_cast<size_t>(H) * bits / 8 : H, w2_row = quant ? static_cast<size_t>(I) * bits / 8 : I;
  const size_t elem = w.kind == WeightKind::f32 ? 4 : w.kind == WeightKind::bf16 ? 2 : 1;
  auto matmul = [&](int e, const void* weights, const float* scales, size_t row_elems, int rows_per_expert, int K,
                    bool second, const int32_t* idx, int M, int n0, int n1, float* y, size_t ldy) {
    const char* we = static_cast<const char*>(weights) + static_cast<size_t>(e) * rows_per_expert * row_elems * elem;
    if (!quant) {
      FloatGemm g{second ? s.act.data() : x, static_cast<size_t>(K), idx, M, we, K, n0, n1, y, ldy};
      (w.kind == WeightKind::f32 ? kernels.gemm_f32 : kernels.gemm_bf16)(g);
      return;
    }
    const size_t groups = static_cast<size_t>(K / B);
    QuantGemm g{second ? s.aq.data() : s.xq.data(), second ? s.as.data() : s.xs.data(), static_cast<size_t>(K), groups,
                idx, M, reinterpret_cast<const uint8_t*>(we), scales + static_cast<size_t>(e) * rows_per_expert * groups,
                K, B, n0, n1, y, ldy};
    (q4 ? kernels.gemm_q4 : kernels.gemm_q8)(g);
  };
  const std::vector<Item> items13 = split_rows(routed, I, quant ? std::max(B, 4) : 16);
  auto gate_up = [&](size_t i) {
    const Item& it = items13[i];
    const int M = counts[it.e];
    const size_t p0 = offset[it.e];
    float* act = s.act.data() + p0 * I;
    float* up = s.up.data() + p0 * I;
    const int32_t* idx = s.tokens.data() + p0;
    matmul(it.e, w.w13, w.s13, w13_row, 2 * I, H, false, idx, M, it.r0, it.r1, act + it.r0, I);
    matmul(it.e, w.w13, w.s13, w13_row, 2 * I, H, false, idx, M, I + it.r0, I + it.r1, up + it.r0, I);
    for (int m = 0; m < M; ++m)
      for (int j = it.r0; j < it.r1; ++j) {
        const float g = act[static_cast<size_t>(m) * I + j];
        act[static_cast<size_t>(m) * I + j] = g / (1.f + std::exp(-g)) * up[static_cast<size_t>(m) * I + j];
      }
    if (quant)  // this item's blocks of the SwiGLU output to int8 (items are whole blocks)
      for (int m = 0; m < M; ++m) {
        const size_t p = p0 + m;
        quantize_rows(act + static_cast<size_t>(m) * I + it.r0, I, 1, it.r1 - it.r0, B, q4,
                      s.aq.data() + p * I + it.r0, I, s.as.data() + p * agroups + it.r0 / B, agroups);
      }
  };
  parallel_for(parallel, items13.size(), gate_up);

  // down: y[p, h] = act[p] . w2_e[h]
  s.y.resize(P * H);
  const std::vector<Item> items2 = split_rows(routed, H, 16);
  auto down = [&](size_t i) {
    const Item& it = items2[i];
    const size_t p0 = offset[it.e];
    matmul(it.e, w.w2, w.s2, w2_row, H, I, true, s.iota.data() + p0, counts[it.e], it.r0, it.r1,
           s.y.data() + p0 * H + it.r0, H);
  };
  parallel_for(parallel, items2.size(), down);

  // out[t] = sum over its slots of weight * y[pair]
  auto combine = [&](size_t i) {
    const int t0 = static_cast<int>(i) * 16, t1 = std::min(T, t0 + 16);
    for (int t = t0; t < t1; ++t) {
      float* o = out + static_cast<size_t>(t) * H;
      std::fill(o, o + H, 0.f);
      for (int j = 0; j < k; ++j) {
        const float wt = weight[t * k + j];
        const float* y = s.y.data() + static_cast<size_t>(s.pair_of[t * k + j]) * H;
        for (int h = 0; h < H; ++h) o[h] += wt * y[h];
      }
    }
  };
  parallel_for(parallel, (T + 15) / 16, combine);
}

}  // namespace mixtral_cpu
