// The ONNX Runtime custom-op library: domain "mixtral.cpu", ops MoE (float32 weights), MoEBF16 (bf16 weights)
// and MoEQ (int8 / int4 codes + float32 block scales), the linears Linear / LinearBF16 / LinearQ in the same
// three weight formats, and RaggedAttention (attention over each query's visible key slots). I/O tables: ../README.md. Built against ONNX Runtime
// >= 1.21's C API headers and asking for C API version 21, so any onnxruntime >= 1.21 loads it.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention.h"
#include "isa.h"
#include "linear.h"
#include "moe.h"

namespace mixtral_cpu {
namespace {

constexpr const char* kDomain = "mixtral.cpu";
constexpr int kApiVersion = 21;
const OrtApi* g_api = nullptr;

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

class OrtParallel : public Parallel {
 public:
  explicit OrtParallel(OrtKernelContext* context) : context_(context) {}
  void run(size_t n, void (*fn)(void*, size_t), void* data) override {
    Ort::ThrowOnError(g_api->KernelContext_ParallelFor(context_, fn, n, 0, data));
  }

 private:
  OrtKernelContext* context_;
};

struct OpDesc {
  const char* name;
  WeightKind kind;  // q8 stands for "quantized" until the bits attribute is read
  ONNXTensorElementDataType weight_type;
  size_t inputs;
  unsigned weight_inputs;  // bit i: input i has weight_type (the others are float32)
};

constexpr OpDesc kMoE{"MoE", WeightKind::f32, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4, 0b1100};
constexpr OpDesc kMoEBF16{"MoEBF16", WeightKind::bf16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, 4, 0b1100};
constexpr OpDesc kMoEQ{"MoEQ", WeightKind::q8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 6, 0b1100};
constexpr OpDesc kLinear{"Linear", WeightKind::f32, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2, 0b10};
constexpr OpDesc kLinearBF16{"LinearBF16", WeightKind::bf16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, 2, 0b10};
constexpr OpDesc kLinearQ{"LinearQ", WeightKind::q8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 3, 0b10};
constexpr OpDesc kRaggedAttention{"RaggedAttention", WeightKind::f32, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 7, 0};

// What every node of ours holds: its op and name (in every error), the kernel table chosen at session creation,
// and access to its constant weights (pointers into the session's initializers: the layout the kernels stream,
// so nothing is copied).
class Node {
 public:
  Node(const OpDesc& desc, const Ort::ConstKernelInfo& ki) : desc_(desc), name_(ki.GetNodeName()) {
    try {
      kernels_ = &select_kernels();
    } catch (const std::runtime_error& e) {
      fail(e.what());
    }
  }

  // CustomOpBase's status form: every error becomes an ONNX Runtime status naming the node
  template <class Self>
  static OrtStatusPtr compute_status(Self& self, OrtKernelContext* context) {
    try {
      self.Compute(context);
      return nullptr;
    } catch (const std::exception& e) {
      return g_api->CreateStatus(ORT_FAIL, e.what());
    }
  }

  // the op's input types (ONNX Runtime checks them at session creation, naming the node)
  static ONNXTensorElementDataType input_type(const OpDesc& desc, size_t index) {
    return desc.weight_inputs >> index & 1u ? desc.weight_type : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(std::string(kDomain) + "::" + desc_.name + " node '" + name_ + "': " + what);
  }

 protected:
  Shape constant(const Ort::ConstKernelInfo& ki, size_t index, const char* name, const void** data) const {
    int is_constant = 0;
    const Ort::ConstValue value = ki.GetTensorConstantInput(index, &is_constant);
    if (!is_constant) fail(std::string(name) + " must be a constant initializer (weights are read in place)");
    *data = value.GetTensorRawData();
    return value.GetTensorTypeAndShapeInfo().GetShape();
  }

  // the quantization attributes of MoEQ / LinearQ: sets `kind` to q8 / q4, returns bits
  int quant_attributes(const Ort::ConstKernelInfo& ki, WeightKind& kind, int& block) const {
    const int bits = static_cast<int>(ki.GetAttribute<int64_t>("bits"));
    block = static_cast<int>(ki.GetAttribute<int64_t>("block_size"));
    if (bits != 8 && bits != 4) fail("attribute bits = " + std::to_string(bits) + ": 8 or 4");
    if (block <= 0 || block % 32) fail("attribute block_size = " + std::to_string(block) + ": a positive multiple of 32");
    kind = bits == 4 ? WeightKind::q4 : WeightKind::q8;
    return bits;
  }

  OpDesc desc_;
  std::string name_;
  const Kernels* kernels_ = nullptr;
};

// One MoE node: its attributes and the constant expert weights.
class MoEKernel : public Node {
 public:
  MoEKernel(const OpDesc& desc, const OrtKernelInfo* info) : Node(desc, Ort::ConstKernelInfo(info)) {
    Ort::ConstKernelInfo ki(info);
    top_k_ = static_cast<int>(ki.GetAttribute<int64_t>("k"));
    weights_.kind = desc.kind;
    const int bits = desc.kind == WeightKind::q8 ? quant_attributes(ki, weights_.kind, weights_.B) : 0;
    const Shape w13 = constant(ki, 2, "w13", &weights_.w13), w2 = constant(ki, 3, "w2", &weights_.w2);
    if (w13.size() != 3 || w2.size() != 3 || w13[0] != w2[0] || w13[1] % 2)
      fail("w13 " + shape_str(w13) + " and w2 " + shape_str(w2) + ": want [E, 2I, H] and [E, H, I]");
    const int64_t per_byte = bits ? 8 / bits : 1;
    weights_.E = static_cast<int>(w13[0]);
    weights_.I = static_cast<int>(w13[1] / 2);
    weights_.H = static_cast<int>(w13[2] * per_byte);
    if (w2[1] != weights_.H || w2[2] * per_byte != weights_.I)
      fail("w13 " + shape_str(w13) + " and w2 " + shape_str(w2) + " disagree on H or I");
    if (top_k_ < 1 || top_k_ > weights_.E)
      fail("attribute k = " + std::to_string(top_k_) + ": between 1 and E = " + std::to_string(weights_.E));
    if (bits) {
      if (weights_.H % weights_.B || weights_.I % weights_.B)
        fail("block_size " + std::to_string(weights_.B) + " divides neither H = " + std::to_string(weights_.H) +
             " nor I = " + std::to_string(weights_.I));
      const void* s13;
      const void* s2;
      const Shape want13{weights_.E, 2 * weights_.I, weights_.H / weights_.B}, want2{weights_.E, weights_.H, weights_.I / weights_.B};
      const Shape got13 = constant(ki, 4, "w13_scales", &s13), got2 = constant(ki, 5, "w2_scales", &s2);
      if (got13 != want13 || got2 != want2)
        fail("scales " + shape_str(got13) + " and " + shape_str(got2) + ": want " + shape_str(want13) + " and " + shape_str(want2));
      weights_.s13 = static_cast<const float*>(s13);
      weights_.s2 = static_cast<const float*>(s2);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return compute_status(*this, context); }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0), logits = ctx.GetInput(1);
    const Shape xs = x.GetTensorTypeAndShapeInfo().GetShape(), ls = logits.GetTensorTypeAndShapeInfo().GetShape();
    if (xs.size() != 2 || xs[1] != weights_.H || ls.size() != 2 || ls[0] != xs[0] || ls[1] != weights_.E)
      fail("x " + shape_str(xs) + " and router_logits " + shape_str(ls) + ": want [T, " + std::to_string(weights_.H) +
           "] and [T, " + std::to_string(weights_.E) + "]");
    Ort::UnownedValue y = ctx.GetOutput(0, xs);
    OrtParallel parallel(context);
    moe_forward(*kernels_, weights_, top_k_, x.GetTensorData<float>(), logits.GetTensorData<float>(),
                static_cast<int>(xs[0]), y.GetTensorMutableData<float>(), parallel);
  }

  // y has x's shape. (onnxruntime 1.32 did not fail a session on this function's error in our tests: Compute
  // checks the activations' shapes again on every call, with the node's name.)
  static OrtStatusPtr infer_shape(Ort::ShapeInferContext& ctx) {
    const auto& x = ctx.GetInputShape(0);
    const auto& logits = ctx.GetInputShape(1);
    if (x.size() != 2 || logits.size() != 2)
      return Ort::Status("mixtral.cpu MoE: x and router_logits must be 2-D ([T, H], [T, E])", ORT_INVALID_ARGUMENT).release();
    for (size_t i = 2; i < ctx.GetInputCount(); ++i)
      if (ctx.GetInputShape(i).size() != 3)
        return Ort::Status("mixtral.cpu MoE: weights and scales must be 3-D ([E, rows, columns])", ORT_INVALID_ARGUMENT).release();
    return ctx.SetOutputShape(0, x).release();
  }

 private:
  int top_k_ = 0;
  MoEWeights weights_{};
};

// One linear node: y [..., N] = x [..., K] Wᵀ, W [N, K] float32 / bf16, or codes [N, K * bits / 8] with scales
// [N, K / B].
class LinearKernel : public Node {
 public:
  LinearKernel(const OpDesc& desc, const OrtKernelInfo* info) : Node(desc, Ort::ConstKernelInfo(info)) {
    Ort::ConstKernelInfo ki(info);
    weights_.kind = desc.kind;
    const int bits = desc.kind == WeightKind::q8 ? quant_attributes(ki, weights_.kind, weights_.B) : 0;
    const Shape w = constant(ki, 1, bits ? "codes" : "w", &weights_.w);
    const int64_t per_byte = bits ? 8 / bits : 1;
    if (w.size() != 2 || w[0] < 1 || w[1] < 1 || w[0] > INT32_MAX || w[1] * per_byte > INT32_MAX)
      fail(std::string(bits ? "codes " : "w ") + shape_str(w) + ": want [N, K" + (bits ? " * bits / 8" : "") + "]");
    weights_.N = static_cast<int>(w[0]);
    weights_.K = static_cast<int>(w[1] * per_byte);
    if (bits) {
      if (weights_.K % weights_.B)
        fail("block_size " + std::to_string(weights_.B) + " does not divide K = " + std::to_string(weights_.K));
      const void* scales;
      const Shape want{weights_.N, weights_.K / weights_.B}, got = constant(ki, 2, "scales", &scales);
      if (got != want) fail("scales " + shape_str(got) + ": want " + shape_str(want));
      weights_.s = static_cast<const float*>(scales);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return compute_status(*this, context); }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0);
    Shape shape = x.GetTensorTypeAndShapeInfo().GetShape();
    if (shape.empty() || shape.back() != weights_.K)
      fail("x " + shape_str(shape) + ": want [..., " + std::to_string(weights_.K) + "]");
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
    shape.back() = weights_.N;
    Ort::UnownedValue y = ctx.GetOutput(0, shape);
    OrtParallel parallel(context);
    linear_forward(*kernels_, weights_, x.GetTensorData<float>(), rows, y.GetTensorMutableData<float>(), parallel);
  }

  // y: x's shape with its last dimension N (the weight's rows)
  static OrtStatusPtr infer_shape(Ort::ShapeInferContext& ctx) {
    auto y = ctx.GetInputShape(0);
    const auto& w = ctx.GetInputShape(1);
    if (y.empty() || w.size() != 2)
      return Ort::Status("mixtral.cpu Linear: x must be [..., K] and the weight 2-D ([N, columns])", ORT_INVALID_ARGUMENT).release();
    y.back() = w[0];
    return ctx.SetOutputShape(0, y).release();
  }

 private:
  LinearWeights weights_{};
};

// One RaggedAttention node: out [B, T, H * D] = attention of the rotated query over the visible slots of the
// present key / value caches [B, G, S, D] (attention.h). Attributes num_heads (H), kv_num_heads (G); the rotary
// tables cos / sin [C, D / 2] are constant initializers, which fix D.
class AttentionKernel : public Node {
 public:
  AttentionKernel(const OpDesc& desc, const OrtKernelInfo* info) : Node(desc, Ort::ConstKernelInfo(info)) {
    Ort::ConstKernelInfo ki(info);
    H_ = static_cast<int>(ki.GetAttribute<int64_t>("num_heads"));
    G_ = static_cast<int>(ki.GetAttribute<int64_t>("kv_num_heads"));
    if (H_ < 1 || G_ < 1 || H_ % G_ || H_ / G_ > kMaxHeadsPerKv)
      fail("attributes num_heads = " + std::to_string(H_) + ", kv_num_heads = " + std::to_string(G_) +
           ": want kv_num_heads dividing num_heads, at most " + std::to_string(kMaxHeadsPerKv) + " query heads per kv head");
    const void* cos;
    const void* sin;
    const Shape cs = constant(ki, 5, "cos", &cos), ss = constant(ki, 6, "sin", &sin);
    if (cs.size() != 2 || cs != ss || cs[0] < 1 || cs[1] < 1)
      fail("cos " + shape_str(cs) + " and sin " + shape_str(ss) + ": want the same [max_seq, head_dim / 2]");
    cos_ = static_cast<const float*>(cos);
    sin_ = static_cast<const float*>(sin);
    rows_ = cs[0];
    D_ = static_cast<int>(2 * cs[1]);
    // what the graph declares of the activations' shapes (-1: unknown), checked now rather than at the first call
    const int64_t G = G_, D = D_, HD = static_cast<int64_t>(H_) * D_;
    const struct { size_t index; const char* name; Shape want; } declared[] = {
        {0, "query", {-1, -1, HD}}, {1, "key", {-1, G, -1, D}}, {2, "value", {-1, G, -1, D}},
        {3, "attention_visible", {-1, -1, -1}}, {4, "position_ids", {-1, -1}}};
    for (const auto& d : declared) {
      const Shape got = ki.GetInputTypeInfo(d.index).GetTensorTypeAndShapeInfo().GetShape();
      if (got.empty()) continue;  // no shape declared
      bool ok = got.size() == d.want.size();
      for (size_t j = 0; ok && j < got.size(); ++j) ok = got[j] < 0 || d.want[j] < 0 || got[j] == d.want[j];
      if (!ok) fail(std::string(d.name) + " " + shape_str(got) + ": want " + shape_str(d.want) + " (-1: any)");
    }
  }

  static ONNXTensorElementDataType input_type(const OpDesc& /*desc*/, size_t index) {
    if (index == 3) return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    if (index == 4) return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return compute_status(*this, context); }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    const Ort::ConstValue q = ctx.GetInput(0), k = ctx.GetInput(1), v = ctx.GetInput(2), vis = ctx.GetInput(3),
                          pos = ctx.GetInput(4);
    const Shape qs = q.GetTensorTypeAndShapeInfo().GetShape(), ks = k.GetTensorTypeAndShapeInfo().GetShape(),
                vs = v.GetTensorTypeAndShapeInfo().GetShape(), ms = vis.GetTensorTypeAndShapeInfo().GetShape(),
                ps = pos.GetTensorTypeAndShapeInfo().GetShape();
    const bool ok = qs.size() == 3 && qs[2] == static_cast<int64_t>(H_) * D_ && ks.size() == 4 && ks[0] == qs[0] &&
                    ks[1] == G_ && ks[3] == D_ && vs == ks && ms == Shape{qs[0], qs[1], ks[2]} &&
                    ps == Shape{qs[0], qs[1]} && ks[2] <= INT32_MAX && (ks[2] > 0 || qs[0] * qs[1] == 0);
    if (!ok)
      fail("query " + shape_str(qs) + ", key " + shape_str(ks) + ", value " + shape_str(vs) + ", attention_visible " +
           shape_str(ms) + ", position_ids " + shape_str(ps) + ": want [B, T, " + std::to_string(H_ * D_) + "], [B, " +
           std::to_string(G_) + ", S, " + std::to_string(D_) + "] twice, [B, T, S], [B, T] (S >= 1)");
    const int64_t* position = pos.GetTensorData<int64_t>();
    for (int64_t i = 0; i < qs[0] * qs[1]; ++i)
      if (position[i] < 0 || position[i] >= rows_)
        fail("position_ids holds " + std::to_string(position[i]) + ", outside the rotary tables' [0, " +
             std::to_string(rows_) + ")");
    Ort::UnownedValue out = ctx.GetOutput(0, qs);
    const RaggedAttentionArgs args{q.GetTensorData<float>(), k.GetTensorData<float>(), v.GetTensorData<float>(),
                                   vis.GetTensorData<bool>(), position, cos_, sin_,
                                   static_cast<int>(qs[0]), static_cast<int>(qs[1]), static_cast<int>(ks[2]),
                                   H_, G_, D_, out.GetTensorMutableData<float>()};
    OrtParallel parallel(context);
    ragged_attention_forward(*kernels_, args, parallel);
  }

  // out has the query's shape
  static OrtStatusPtr infer_shape(Ort::ShapeInferContext& ctx) {
    const auto& q = ctx.GetInputShape(0);
    if (q.size() != 3)
      return Ort::Status("mixtral.cpu RaggedAttention: the query must be 3-D ([B, T, H * D])", ORT_INVALID_ARGUMENT).release();
    return ctx.SetOutputShape(0, q).release();
  }

 private:
  int H_ = 0, G_ = 0, D_ = 0;
  int64_t rows_ = 0;
  const float* cos_ = nullptr;
  const float* sin_ = nullptr;
};

// The op of one OpDesc, creating `Kernel`s (MoEKernel, LinearKernel, AttentionKernel).
template <class Kernel>
struct Op : Ort::CustomOpBase<Op<Kernel>, Kernel, true> {
  explicit Op(const OpDesc& desc) : desc_(desc) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new Kernel(desc_, info);
      return nullptr;
    } catch (const Ort::Exception& e) {
      return g_api->CreateStatus(ORT_FAIL, (std::string(kDomain) + "::" + desc_.name + ": " + e.what()).c_str());
    } catch (const std::exception& e) {
      return g_api->CreateStatus(ORT_FAIL, e.what());
    }
  }
  const char* GetName() const { return desc_.name; }
  size_t GetInputTypeCount() const { return desc_.inputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const { return Kernel::input_type(desc_, index); }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  static OrtStatusPtr InferOutputShape(Ort::ShapeInferContext& ctx) { return Kernel::infer_shape(ctx); }

 private:
  OpDesc desc_;
};

}  // namespace
}  // namespace mixtral_cpu

extern "C" {

__attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  using namespace mixtral_cpu;
  g_api = base->GetApi(kApiVersion);
  if (g_api == nullptr) return nullptr;  // cannot report: this ONNX Runtime predates C API 21
  Ort::InitApi(g_api);
  try {
    static Op<MoEKernel> moe(kMoE), moe_bf16(kMoEBF16), moe_q(kMoEQ);
    static Op<LinearKernel> linear(kLinear), linear_bf16(kLinearBF16), linear_q(kLinearQ);
    static Op<AttentionKernel> ragged_attention(kRaggedAttention);
    static Ort::CustomOpDomain domain(kDomain);
    static bool added = false;
    if (!added) {
      for (OrtCustomOp* op : std::initializer_list<OrtCustomOp*>{&moe, &moe_bf16, &moe_q, &linear, &linear_bf16, &linear_q,
                                                                  &ragged_attention})
        domain.Add(op);
      added = true;
    }
    Ort::UnownedSessionOptions(options).Add(domain);
    return nullptr;
  } catch (const std::exception& e) {
    return g_api->CreateStatus(ORT_FAIL, e.what());
  }
}

// For the Python side (manifest, tests): which ISA the kernels would use here, and which this CPU runs.
__attribute__((visibility("default"))) const char* mixtral_cpu_isa() {
  static std::string isa;
  try {
    isa = mixtral_cpu::select_kernels().name;
  } catch (const std::exception& e) {
    isa = std::string("error: ") + e.what();
  }
  return isa.c_str();
}

__attribute__((visibility("default"))) const char* mixtral_cpu_supported_isas() {
  static const std::string isas = mixtral_cpu::supported_isas();
  return isas.c_str();
}
}
