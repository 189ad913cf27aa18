// The ONNX Runtime custom-op library: domain "mixtral.cpu", ops MoE (float32 weights), MoEBF16 (bf16 weights)
// and MoEQ (int8 / int4 codes + float32 block scales), and the linears Linear / LinearBF16 / LinearQ in the same
// three weight formats. I/O tables: ../README.md. Built against ONNX Runtime
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

// The op of one OpDesc, creating `Kernel`s (MoEKernel, LinearKernel).
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
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return desc_.weight_inputs >> index & 1u ? desc_.weight_type : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
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
    static Ort::CustomOpDomain domain(kDomain);
    static bool added = false;
    if (!added) {
      for (OrtCustomOp* op : std::initializer_list<OrtCustomOp*>{&moe, &moe_bf16, &moe_q, &linear, &linear_bf16, &linear_q})
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
