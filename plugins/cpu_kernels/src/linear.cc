// The linear ops: decode (T = 1) is a GEMV split by output rows into ~64 equal chunks (each thread streams
// its own weight rows once); prefill and batches run blocks of kRowBlock rows of x (their activations stay in
// L2 while each weight row passes through L1) times chunks of weight rows. Quantized weights take int8
// activations rounded per block of B once per call (quantize_rows), as MoEQ does.
#include "linear.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace mixtral_cpu {
namespace {

constexpr int64_t kMinChunkBytes = 64 * 1024;

struct Scratch {  // per calling thread, reused across calls
  std::vector<int32_t> iota;
  std::vector<int8_t> xq;
  std::vector<float> xs;
};

}  // namespace

void linear_forward(const Kernels& kernels, const LinearWeights& w, const float* x, int64_t T, float* y,
                    Parallel& parallel) {
  if (T <= 0 || w.N <= 0) return;
  const bool quant = w.kind == WeightKind::q8 || w.kind == WeightKind::q4, q4 = w.kind == WeightKind::q4;
  const int K = w.K, N = w.N, B = w.B;
  thread_local Scratch scratch;
  Scratch& s = scratch;
  if (s.iota.size() < static_cast<size_t>(T)) {
    s.iota.resize(T);
    std::iota(s.iota.begin(), s.iota.end(), 0);
  }
  const size_t groups = quant ? static_cast<size_t>(K / B) : 0;
  if (quant) {  // x to int8 per block of B, 16 rows per work item
    s.xq.resize(static_cast<size_t>(T) * K);
    s.xs.resize(static_cast<size_t>(T) * groups);
    auto body = [&](size_t i) {
      const int64_t t0 = static_cast<int64_t>(i) * 16;
      const int n = static_cast<int>(std::min<int64_t>(16, T - t0));
      quantize_rows(x + t0 * K, K, n, K, B, q4, s.xq.data() + t0 * K, K, s.xs.data() + t0 * groups, groups);
    };
    parallel_for(parallel, static_cast<size_t>((T + 15) / 16), body);
  }

  // items: row blocks x chunks of weight rows (a multiple of 16 rows): ~64 items where N allows, but no chunk
  // under kMinChunkBytes of weights (a small projection is a few items, not 64 thread hand-offs)
  const int64_t row_blocks = (T + kRowBlock - 1) / kRowBlock;
  const int64_t row_bytes = quant ? static_cast<int64_t>(K) * (q4 ? 4 : 8) / 8 + static_cast<int64_t>(groups) * 4
                                  : static_cast<int64_t>(K) * (w.kind == WeightKind::f32 ? 4 : 2);
  const int64_t by_size = std::max<int64_t>(1, static_cast<int64_t>(N) * row_bytes / kMinChunkBytes);
  const int64_t want_chunks = std::min(by_size, std::max<int64_t>(1, (64 + row_blocks - 1) / row_blocks));
  int64_t chunk = (N + want_chunks - 1) / want_chunks;
  chunk = std::max<int64_t>(16, (chunk + 15) / 16 * 16);
  const int64_t chunks = (N + chunk - 1) / chunk;
  auto body = [&](size_t i) {
    const int64_t t0 = static_cast<int64_t>(i) / chunks * kRowBlock, c = static_cast<int64_t>(i) % chunks;
    const int M = static_cast<int>(std::min<int64_t>(kRowBlock, T - t0));
    const int n0 = static_cast<int>(c * chunk), n1 = static_cast<int>(std::min<int64_t>(N, n0 + chunk));
    const int32_t* idx = s.iota.data() + t0;  // rows t0.. of x (the kernels add idx[m] * ldx to the base)
    float* out = y + t0 * N + n0;
    if (quant) {
      QuantGemm g{s.xq.data(), s.xs.data(), static_cast<size_t>(K), groups, idx, M, static_cast<const uint8_t*>(w.w),
                  w.s, K, B, n0, n1, out, static_cast<size_t>(N)};
      (q4 ? kernels.gemm_q4 : kernels.gemm_q8)(g);
    } else {
      FloatGemm g{x, static_cast<size_t>(K), idx, M, w.w, K, n0, n1, out, static_cast<size_t>(N)};
      (w.kind == WeightKind::f32 ? kernels.gemm_f32 : kernels.gemm_bf16)(g);
    }
  };
  parallel_for(parallel, static_cast<size_t>(row_blocks * chunks), body);
}

}  // namespace mixtral_cpu
