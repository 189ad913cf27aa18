// The fused MoE layer: routing, tokens grouped per expert, gate/up + SwiGLU, down, weighted sum (moe.cc).
// T tokens, H hidden, I intermediate, E experts, k experts per token, P = T * k (token, slot) pairs, B block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels.h"

namespace mixtral_cpu {

enum class WeightKind { f32, bf16, q8, q4 };

struct MoEWeights {
  WeightKind kind;
  int E, H, I, B;       // B: quantization block (q8 / q4), else 0
  const void* w13;      // [E, 2I, H] (codes: [E, 2I, H * bits / 8]): rows [0, I) gate, [I, 2I) up
  const void* w2;       // [E, H, I]  (codes: [E, H, I * bits / 8])
  const float* s13;     // [E, 2I, H / B] (quantized only)
  const float* s2;      // [E, H, I / B]
};

// How the layer's work is run: ONNX Runtime's intra-op pool in the op, a plain loop anywhere else.
class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual void run(size_t n, void (*fn)(void*, size_t), void* data) = 0;
};

// body(i) for i < n over `parallel` (the calling thread alone for n = 1)
template <class F>
void parallel_for(Parallel& parallel, size_t n, F& body) {
  if (n == 0) return;
  if (n == 1) return body(size_t{0});
  parallel.run(n, [](void* data, size_t i) { (*static_cast<F*>(data))(i); }, &body);
}

// x [T, H], router_logits [T, E] -> out [T, H] (float32 throughout; weights as `w` says)
void moe_forward(const Kernels& kernels, const MoEWeights& w, int top_k, const float* x, const float* router_logits,
                 int T, float* out, Parallel& parallel);

}  // namespace mixtral_cpu
