// The ONNX Runtime custom-op library: domain "mixtral.cpu", ops MoE (float32 weights), MoEBF16 (bf16 weights)
// and MoEQ (int8 / int4 codes + float32 block scales). I/O tables: ../README.md. Built against ONNX Runtime
// >= 1.21's C API headers and asking for C API version 21, so any onnxruntime >= 1.21 loads it.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "isa.h"
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
};

constexpr OpDesc kMoE{"MoE", WeightKind::f32, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4};
constexpr OpDesc kMoEBF16{"MoEBF16", WeightKind::bf16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, 4};
constexpr OpDesc kMoEQ{"MoEQ", WeightKind::q8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 6};

// One node: its attributes, the constant weights (pointers into the session's initializers: the layout the
// kernels stream, so nothing is copied) and the kernel table chosen at session creation.
class MoEKernel {
 public:
  MoEKernel(const OpDesc& desc, const OrtKernelInfo* info) : desc_(desc) {
    Ort::ConstKernelInfo ki(info);
    name_ = ki.GetNodeName();
    try {
      kernels_ = &select_kernels();
    } catch (const std::runtime_error& e) {
      fail(e.what());
    }
    top_k_ = static_cast<int>(ki.GetAttribute<int64_t>("k"));
    weights_.kind = desc.kind;
    int bits = 0;
    if (desc.kind == WeightKind::q8) {
      bits = static_cast<int>(ki.GetAttribute<int64_t>("bits"));
      weights_.B = static_cast<int>(ki.GetAttribute<int64_t>("block_size"));
      if (bits != 8 && bits != 4) fail("attribute bits = " + std::to_string(bits) + ": 8 or 4");
      if (weights_.B <= 0 || weights_.B % 32) fail("attribute block_size = " + std::to_string(weights_.B) + ": a positive multiple of 32");
      if (bits == 4) weights_.kind = WeightKind::q4;
    }
    const Shape w13 = constant(ki, 2, &weights_.w13), w2 = constant(ki, 3, &weights_.w2);
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
      const Shape got13 = constant(ki, 4, &s13), got2 = constant(ki, 5, &s2);
      if (got13 != want13 || got2 != want2)
        fail("scales " + shape_str(got13) + " and " + shape_str(got2) + ": want " + shape_str(want13) + " and " + shape_str(want2));
      weights_.s13 = static_cast<const float*>(s13);
      weights_.s2 = static_cast<const float*>(s2);
    }
  }

  // CustomOpBase's status form: every error becomes an ONNX Runtime status naming the node
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Compute(context);
      return nullptr;
    } catch (const std::exception& e) {
      return g_api->CreateStatus(ORT_FAIL, e.what());
    }
  }

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

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(std::string(kDomain) + "::" + desc_.name + " node '" + name_ + "': " + what);
  }

 private:
  Shape constant(const Ort::ConstKernelInfo& ki, size_t index, const void** data) const {
    int is_constant = 0;
    const Ort::ConstValue value = ki.GetTensorConstantInput(index, &is_constant);
    static const char* const names[] = {"x", "router_logits", "w13", "w2", "w13_scales", "w2_scales"};
    if (!is_constant) fail(std::string(names[index]) + " must be a constant initializer (weights are read in place)");
    *data = value.GetTensorRawData();
    return value.GetTensorTypeAndShapeInfo().GetShape();
  }

  OpDesc desc_;
  std::string name_;
  const Kernels* kernels_ = nullptr;
  int top_k_ = 0;
  MoEWeights weights_{};
};

struct MoEOp : Ort::CustomOpBase<MoEOp, MoEKernel, true> {
  explicit MoEOp(const OpDesc& desc) : desc_(desc) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new MoEKernel(desc_, info);
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
    return index == 2 || index == 3 ? desc_.weight_type : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

  // y has x's shape. (onnxruntime 1.32 did not fail a session on this function's error in our tests: Compute
  // checks the activations' shapes again on every call, with the node's name.)
  static OrtStatusPtr InferOutputShape(Ort::ShapeInferContext& ctx) {
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
    static MoEOp moe(kMoE), moe_bf16(kMoEBF16), moe_q(kMoEQ);
    static Ort::CustomOpDomain domain(kDomain);
    static bool added = false;
    if (!added) {
      domain.Add(&moe);
      domain.Add(&moe_bf16);
      domain.Add(&moe_q);
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
