// The linear ops' forward pass (linear.cc): y = x Wᵀ for float32, bf16 or int8 / int4 block-quantized weights
// W [N, K] (torch Linear layout, read in place), over the matrix kernels of kernels.h.
// T rows (every leading dimension of x flattened), K inputs, N outputs, B quantization block.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h"
#include "moe.h"  // WeightKind, Parallel

namespace mixtral_cpu {

struct LinearWeights {
  WeightKind kind;
  int N, K, B;          // B: quantization block (q8 / q4), else 0
  const void* w;        // [N, K] float / bf16, or codes [N, K * bits / 8]
  const float* s;       // [N, K / B] (quantized only)
};

// x [T, K] -> y [T, N] (float32). Work items: blocks of up to kRowBlock rows of x times chunks of weight rows,
// each (t, n) dot computed whole by one kernel call, so 1 to 4 threads give identical results.
constexpr int kRowBlock = 64;
void linear_forward(const Kernels& kernels, const LinearWeights& w, const float* x, int64_t T, float* y,
                    Parallel& parallel);

}  // namespace mixtral_cpu
