// A benchmark entry for the Python side (bench/cpu_linears.py `kernel_rates`): the quantized GEMM kernel alone,
// without an ONNX Runtime session around it, on the calling thread. Not used by the ops.
#include <time.h>

#include <cstdint>
#include <exception>
#include <numeric>
#include <random>
#include <vector>

#include "isa.h"

extern "C" {

// Times `reps` calls of the selected ISA's int8 (bits 8) or int4 (bits 4) GEMM: M activation rows x N weight rows
// of K inputs, blocks of B, random codes and scales (weights and activations stay in cache where N * K allows).
// Returns the calling thread's CPU seconds for the calls, or a negative number for bad arguments or an error.
__attribute__((visibility("default"))) double mixtral_cpu_time_gemm_q(int bits, int M, int N, int K, int B,
                                                                       int reps) {
  using namespace mixtral_cpu;
  if ((bits != 4 && bits != 8) || M < 1 || N < 1 || B < 32 || B % 32 != 0 || K < B || K % B != 0 || reps < 1)
    return -1.0;
  try {
    const Kernels& kernels = select_kernels();
    std::mt19937 rng(0);
    const size_t groups = static_cast<size_t>(K / B), row_bytes = static_cast<size_t>(K) * bits / 8;
    std::vector<int8_t> xq(static_cast<size_t>(M) * K);
    std::vector<uint8_t> w(static_cast<size_t>(N) * row_bytes);
    std::vector<float> xs(static_cast<size_t>(M) * groups), ws(static_cast<size_t>(N) * groups);
    std::vector<float> y(static_cast<size_t>(M) * N);
    std::vector<int32_t> idx(M);
    std::iota(idx.begin(), idx.end(), 0);
    std::uniform_int_distribution<int> code(0, 255), act(-127, 127);
    std::uniform_real_distribution<float> scale(0.001f, 0.01f);
    for (auto& v : xq) v = static_cast<int8_t>(act(rng));
    for (auto& v : w) v = static_cast<uint8_t>(code(rng));
    for (auto& v : xs) v = scale(rng);
    for (auto& v : ws) v = scale(rng);
    QuantGemm g{xq.data(), xs.data(), static_cast<size_t>(K), groups, idx.data(), M, w.data(), ws.data(), K, B,
                0, N, y.data(), static_cast<size_t>(N)};
    auto gemm = bits == 8 ? kernels.gemm_q8 : kernels.gemm_q4;
    gemm(g);  // warm the caches
    timespec start{}, end{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    for (int r = 0; r < reps; ++r) gemm(g);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
    return static_cast<double>(end.tv_sec - start.tv_sec) + 1e-9 * static_cast<double>(end.tv_nsec - start.tv_nsec);
  } catch (const std::exception&) {
    return -2.0;
  }
}
}
