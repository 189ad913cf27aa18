"""`trt` lowering: each MoERouter + MoEExperts pair becomes the sparse-dispatch plugin nodes of plugins/.

    router_logits -> MoERouter -> (weights, experts)
    experts -> MoEAlign -> (sorted_pairs, block_experts, num_padded)
    x, sorted_pairs, block_experts, num_padded, w13 -> MoEGemmSwiGLU -> inter     (or the ...Q plugins with
    inter, sorted_pairs, block_experts, num_padded, weights, w2 -> MoEGemmDown -> y_pairs [T*k, H] f32     codes +
                                                                                     scales for int8 / int4)
    y = Cast(ReduceSum(Reshape(y_pairs, [-1, k, H]), axis 1), x dtype)      (the k-way combine)

op_type = plugin name; the attributes (`plugin_namespace`, `plugin_version`, `aot`, and the fields) come
from each plugin's spec. TensorRT's ONNX parser ignores the node domain; `plugins-cpu` uses the domain
of onnxruntime-extensions' Python ops so ONNX Runtime runs the same nodes with the plugin kernels.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.plugins import (
    MOE_ALIGN,
    MOE_GEMM_DOWN,
    MOE_GEMM_DOWN_Q,
    MOE_GEMM_SWIGLU,
    MOE_GEMM_SWIGLU_Q,
    MOE_ROUTER,
)
from mixtral_trt.plugins.tiles import ALIGN_BLOCK

from .common import int64_const, moe_pairs, replace_pair, tidy

PLUGIN_DOMAIN = "trt.plugins"
CPU_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions PyOp
INT32 = ir.TensorType(ir.DataType.INT32)
FLOAT = ir.TensorType(ir.DataType.FLOAT)


def packed_codes(graph: ir.Graph, codes: ir.Value) -> ir.Value:
    """uint8 codes [E, N, B] -> the same bytes as INT32 elements [E, N, B/4], a new initializer (computed while
    saving). TensorRT's ONNX parser widens UINT8 initializers to INT32 element by element, which the kernels,
    reading bytes, cannot use; INT32 initializers reach them as they are."""
    tensor = codes.const_value
    if tensor is None:
        raise MixtralTrtError(f"{codes.name}: quantized expert codes must be initializers for the trt lowering")
    *lead, row_bytes = tensor.shape
    if row_bytes % 4:
        raise MixtralTrtError(f"{codes.name}: {row_bytes} code bytes per row; the trt lowering packs them into int32 "
                              "elements, so the row must be a multiple of 4 bytes (hidden and intermediate sizes "
                              "multiples of 4 for int8, of 8 for int4)")
    shape = ir.Shape([*lead, row_bytes // 4])
    name = f"{codes.name}.i32"
    lazy = ir.LazyTensor(lambda: ir.Tensor(np.ascontiguousarray(tensor.numpy()).view("<i4")), dtype=ir.DataType.INT32,
                         shape=shape, name=name)
    value = ir.Value(name=name, shape=shape, type=INT32, const_value=lazy)
    graph.register_initializer(value)
    return value


def lower(model: ir.Model, domain: str = PLUGIN_DOMAIN, block_size: int = ALIGN_BLOCK, aot: bool = True
          ) -> ir.Model:
    graph = model.graph
    for pair in list(moe_pairs(graph)):
        num_experts, hidden = pair.w2.shape[0], pair.w2.shape[1]
        k = pair.top_k
        tape = ir.tape.Tape()
        weights, experts = tape.op_multi_out(
            MOE_ROUTER.name, [pair.router_logits], MOE_ROUTER.node_attributes(aot, top_k=k), num_outputs=2,
            domain=domain, name=f"{pair.router.name}.plugin")
        sorted_pairs, block_experts, num_padded = tape.op_multi_out(
            MOE_ALIGN.name, [experts], MOE_ALIGN.node_attributes(aot, num_experts=num_experts, block_size=block_size),
            num_outputs=3, domain=domain)
        routing = [sorted_pairs, block_experts, num_padded]
        if pair.w13_order is not None:
            raise MixtralTrtError(f"{pair.experts.name}: act-order experts (an act-order quantized checkpoint "
                                  "exported as stored: each expert's own input order) have no TensorRT plugin "
                                  "variant yet; build for ort")
        if pair.w13_zeros is not None:
            raise MixtralTrtError(f"{pair.experts.name}: experts with zero points (an asymmetric quantized "
                                  "checkpoint exported as stored) have no TensorRT plugin variant yet; build for ort")
        if pair.quant:  # weight-only int8 / int4 experts: the GEMMs dequantize on the fly
            bits, quant_block = pair.quant
            w13, w2 = packed_codes(graph, pair.w13), packed_codes(graph, pair.w2)
            fields = {"top_k": k, "block_size": block_size, "bits": bits, "quant_block": quant_block}
            inter = tape.op(MOE_GEMM_SWIGLU_Q.name, [pair.x, *routing, w13, pair.w13_scales],
                            MOE_GEMM_SWIGLU_Q.node_attributes(aot, **fields), domain=domain)
            y_pairs = tape.op(MOE_GEMM_DOWN_Q.name, [inter, *routing, weights, w2, pair.w2_scales],
                              MOE_GEMM_DOWN_Q.node_attributes(aot, **fields), domain=domain)
        else:
            fields = {"top_k": k, "block_size": block_size}
            inter = tape.op(MOE_GEMM_SWIGLU.name, [pair.x, *routing, pair.w13],
                            MOE_GEMM_SWIGLU.node_attributes(aot, **fields), domain=domain)
            y_pairs = tape.op(MOE_GEMM_DOWN.name, [inter, *routing, weights, pair.w2],
                              MOE_GEMM_DOWN.node_attributes(aot, **fields), domain=domain)
        per_token = tape.op("Reshape", [y_pairs, int64_const(tape, [-1, k, hidden])])
        summed = tape.op("ReduceSum", [per_token, int64_const(tape, [1])], {"keepdims": 0})
        y = tape.op("Cast", [summed], {"to": pair.x.type.dtype})
        for value, vtype in ((weights, FLOAT), (experts, INT32), (sorted_pairs, INT32), (block_experts, INT32),
                             (num_padded, INT32), (inter, pair.x.type), (y_pairs, FLOAT)):
            value.type = vtype
        y.type, y.shape = pair.experts.outputs[0].type, pair.experts.outputs[0].shape
        replace_pair(graph, pair, list(tape.nodes), y)  # also drops the canonical router, now unused
    model.opset_imports[domain] = 1
    return tidy(model)
