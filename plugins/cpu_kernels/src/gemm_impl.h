// The kernels of kernels.h written once over a SIMD traits class V, instantiated by kernels_<isa>.cc.
//
// V provides: F (a float vector of V::W lanes), zero / load / loadw (float or bf16 weights) / fma / hsum / bcast /
// store / add / sub / exp_nonpositive (attention_impl.h);
// for the quantized kernels I (8 int32 lanes), Q (32 int8), F8 (8 floats), izero, isub, load_q8 / load_q4 (signed
// weights, or with kUnsignedCodes the codes as stored and zero_point<bits>() to dot with x and subtract), load_x,
// dot (I += 4-byte groups of w * x), cvt, fma8 (a * scalar + c), zero8, hsum8; and the tile
// sizes MR_F x NR_F, MR_Q x NR_Q (activation rows x weight rows computed together: each weight vector loaded
// once per MR rows, each activation vector once per NR rows).
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "attention_impl.h"
#include "kernels.h"

namespace mixtral_cpu {
// internal linkage: each kernels_<isa>.cc compiles its own copy with its own -m flags, and the linker must never
// hand one ISA's copy of an inline function to another's caller
namespace {
namespace impl {

// row_tiles' last tile: f(std::integral_constant<int, left>{}, m) for 0 < left <= R
template <int R, class F>
inline void last_tile(int left, int m, F& f) {
  if constexpr (R > 0) {
    if (left == R) return f(std::integral_constant<int, R>{}, m);
    last_tile<R - 1>(left, m, f);
  }
}

// f(std::integral_constant<int, R>{}, m) over rows [0, M): tiles of MR rows, then one tile of the M % MR rows left
// (without computing padding rows)
template <int MR, class F>
inline void row_tiles(int M, F&& f) {
  int m = 0;
  for (; m + MR <= M; m += MR) f(std::integral_constant<int, MR>{}, m);
  last_tile<MR - 1>(M - m, m, f);
}

inline float widen(float v) { return v; }
inline float widen(uint16_t bf16) {
  const uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// MR activation rows x NR weight rows of float / bf16 weights: y[i * ldy + col[j]] for the j with col[j] >= 0
template <class V, class WT, int MR, int NR>
inline void tile_float(const float* const* x, const WT* const* w, int K, const int* col, float* y, size_t ldy) {
  typename V::F acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();
  int k = 0;
  for (; k + V::W <= K; k += V::W) {
    typename V::F wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = V::loadw(w[j] + k);
    for (int i = 0; i < MR; ++i) {
      const typename V::F xv = V::load(x[i] + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::fma(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      if (col[j] < 0) continue;
      float s = V::hsum(acc[i][j]);
      for (int kk = k; kk < K; ++kk) s += x[i][kk] * widen(w[j][kk]);
      y[i * ldy + col[j]] = s;
    }
}

template <class V, class WT, int MR>
inline void rows_float(const FloatGemm& g, const WT* const* w, const int* col, int m) {
  const float* x[MR];
  for (int i = 0; i < MR; ++i) x[i] = g.x + static_cast<size_t>(g.idx[m + i]) * g.ldx;
  tile_float<V, WT, MR, V::NR_F>(x, w, g.K, col, g.y + static_cast<size_t>(m) * g.ldy, g.ldy);
}

// Each pass reads its NR weight rows as NR separate streams (StreamRows, kernels.h).
template <class V, class WT>
void gemm_float(const FloatGemm& g) {
  constexpr int NR = V::NR_F, MR = V::MR_F;
  if (g.n1 <= g.n0) return;
  const WT* weights = static_cast<const WT*>(g.w);
  const int passes = StreamRows<NR>::passes(g.n0, g.n1);
  for (int p = 0; p < passes; ++p) {
    const StreamRows<NR> s(g.n0, g.n1, passes, p);
    const WT* w[NR];
    for (int j = 0; j < NR; ++j) w[j] = weights + s.row[j] * g.K;
    const int* col = s.col;
    row_tiles<MR>(g.M, [&](auto mr, int m) { rows_float<V, WT, decltype(mr)::value>(g, w, col, m); });
  }
}

// MR x NR dots of int8 activations with int8 / int4 weights, per block of B: int32 sums scaled by
// x scale * w scale into float lanes
template <class V, int BITS, int MR, int NR>
inline void tile_quant(const QuantGemm& g, const int8_t* const* xq, const float* const* xs, const uint8_t* const* w,
                       const float* const* ws, const int* col, float* y) {
  typename V::F8 facc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) facc[i][j] = V::zero8();
  const int groups = g.K / g.B;
  for (int b = 0; b < groups; ++b) {
    typename V::I iacc[MR][NR], zp_part[MR];
    for (int i = 0; i < MR; ++i) {
      zp_part[i] = V::izero();
      for (int j = 0; j < NR; ++j) iacc[i][j] = V::izero();
    }
    for (int c = 0; c < g.B; c += 32) {
      const int k = b * g.B + c;
      typename V::Q wq[NR];
      for (int j = 0; j < NR; ++j) wq[j] = BITS == 8 ? V::load_q8(w[j] + k) : V::load_q4(w[j] + k / 2);
      for (int i = 0; i < MR; ++i) {
        const typename V::Q xv = V::load_x(xq[i] + k);
        if constexpr (V::kUnsignedCodes) zp_part[i] = V::dot(zp_part[i], V::template zero_point<BITS>(), xv);
        for (int j = 0; j < NR; ++j) iacc[i][j] = V::dot(iacc[i][j], wq[j], xv);
      }
    }
    if constexpr (V::kUnsignedCodes)  // lane by lane: sum of (code - zp) * x, no cancellation across lanes
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) iacc[i][j] = V::isub(iacc[i][j], zp_part[i]);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) facc[i][j] = V::fma8(V::cvt(iacc[i][j]), xs[i][b] * ws[j][b], facc[i][j]);
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      if (col[j] >= 0) y[i * g.ldy + col[j]] = V::hsum8(facc[i][j]);
}

// rows m .. m + R of the call (through g.idx): their int8 codes and scales
template <int R>
inline void activation_rows(const QuantGemm& g, int m, const int8_t* (&xq)[R], const float* (&xs)[R]) {
  for (int i = 0; i < R; ++i) {
    const size_t r = static_cast<size_t>(g.idx[m + i]);
    xq[i] = g.xq + r * g.ldx;
    xs[i] = g.xs + r * g.ldxs;
  }
}

// The loop every quantized GEMM shares: NR weight rows at a time (their codes and scales; read as NR separate
// streams: StreamRows, kernels.h), MR activation rows at a time (their int8 codes and scales gathered through
// g.idx), then the rows left over (row_tiles); tile(mr, xq, xs, w, ws, col, y) computes one block (mr:
// std::integral_constant<int, rows in the block>) and writes y[i * ldy + col[j]] for the j with col[j] >= 0.
template <int NR, int MR, int BITS, class Tile>
void quant_gemm_loop(const QuantGemm& g, Tile&& tile) {
  if (g.n1 <= g.n0) return;
  const size_t row_bytes = static_cast<size_t>(g.K) * BITS / 8, groups = static_cast<size_t>(g.K / g.B);
  const int passes = StreamRows<NR>::passes(g.n0, g.n1);
  for (int p = 0; p < passes; ++p) {
    const StreamRows<NR> s(g.n0, g.n1, passes, p);
    const uint8_t* w[NR];
    const float* ws[NR];
    for (int j = 0; j < NR; ++j) {
      w[j] = g.w + s.row[j] * row_bytes;
      ws[j] = g.ws + s.row[j] * groups;
    }
    const int* col = s.col;
    auto rows = [&](auto mr, int m) {
      constexpr int R = decltype(mr)::value;
      const int8_t* xq[R];
      const float* xs[R];
      activation_rows<R>(g, m, xq, xs);
      tile(mr, xq, xs, w, ws, col, g.y + static_cast<size_t>(m) * g.ldy);
    };
    row_tiles<MR>(g.M, rows);
  }
}

template <class V, int BITS>
void gemm_quant(const QuantGemm& g) {
  quant_gemm_loop<V::NR_Q, V::MR_Q, BITS>(g, [&](auto mr, auto xq, auto xs, auto w, auto ws, const int* col, float* y) {
    tile_quant<V, BITS, decltype(mr)::value, V::NR_Q>(g, xq, xs, w, ws, col, y);
  });
}

template <class V>
Kernels make_kernels(const char* name) {
  return Kernels{name, &gemm_float<V, float>, &gemm_float<V, uint16_t>, &gemm_quant<V, 8>, &gemm_quant<V, 4>,
                 &attend<V>};
}

}  // namespace impl
}  // namespace
}  // namespace mixtral_cpu
