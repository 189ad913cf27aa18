"""`trt` lowering: each MoERouter + MoEExperts pair becomes the sparse-dispatch plugin nodes of plugins/.

    router_logits -> MoERouter -> (weights, experts)
    experts -> MoEAlign -> (sorted_pairs, block_experts, num_padded)
    x, sorted_pairs, block_experts, num_padded, w13 -> MoEGemmSwiGLU -> inter     (or the ...Q plugins with
    inter, sorted_pairs, block_experts, num_padded, weights, w2 -> MoEGemmDown -> y_pairs [T*k, H] f32     codes +
                                                                                     scales for int8 / int4;
                                                                                     the ...QZ plugins with zero
                                                                                     points and the act-order
                                                                                     input order too; the ...F8
                                                                                     plugins with e4m3fn bytes)
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
    MOE_GEMM_DOWN_F8,
    MOE_GEMM_DOWN_Q,
    MOE_GEMM_DOWN_QZ,
    MOE_GEMM_SWIGLU,
    MOE_GEMM_SWIGLU_F8,
    MOE_GEMM_SWIGLU_Q,
    MOE_GEMM_SWIGLU_QZ,
    MOE_ROUTER,
)
from mixtral_trt.plugins.tiles import ALIGN_BLOCK

from .common import F8_OPS, int64_const, moe_pairs, replace_pair, tidy

PLUGIN_DOMAIN = "trt.plugins"
CPU_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions PyOp
INT32 = ir.TensorType(ir.DataType.INT32)
FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _int32_initializer(graph: ir.Graph, name: str, shape: list[int], array) -> ir.Value:
    """A new INT32 initializer `name` whose data `array()` computes while saving."""
    shape = ir.Shape(shape)
    lazy = ir.LazyTensor(lambda: ir.Tensor(array()), dtype=ir.DataType.INT32, shape=shape, name=name)
    value = ir.Value(name=name, shape=shape, type=INT32, const_value=lazy)
    graph.register_initializer(value)
    return value


def _constant(value: ir.Value, what: str) -> ir.TensorProtocol:
    if value.const_value is None:
        raise MixtralTrtError(f"{value.name}: quantized expert {what} must be initializers for the trt lowering")
    return value.const_value


def packed_codes(graph: ir.Graph, codes: ir.Value, pad: bool = False) -> ir.Value:
    """uint8 codes [E, N, B] -> the same bytes as INT32 elements [E, N, B/4], a new initializer (computed while
    saving). TensorRT's ONNX parser widens UINT8 initializers to INT32 element by element, which the kernels,
    reading bytes, cannot use; INT32 initializers reach them as they are. `pad`: rows padded with zero bytes to
    whole words (zero points: the kernels' row stride, plugins/dequant.py zero_rows) instead of refused."""
    tensor = _constant(codes, "codes and zero points")
    *lead, row_bytes = tensor.shape
    if row_bytes % 4 and not pad:
        raise MixtralTrtError(f"{codes.name}: {row_bytes} code bytes per row; the trt lowering packs them into int32 "
                              "elements, so the row must be a multiple of 4 bytes (hidden and intermediate sizes "
                              "multiples of 4 for int8, of 8 for int4)")
    words = -(-row_bytes // 4)

    def array():
        data = np.ascontiguousarray(tensor.numpy())
        if words * 4 != row_bytes:
            data = np.concatenate([data, np.zeros((*lead, words * 4 - row_bytes), np.uint8)], axis=-1)
        return np.ascontiguousarray(data).view("<i4")

    return _int32_initializer(graph, f"{codes.name}.i32", [*lead, words], array)


def input_order(graph: ir.Graph, order: ir.Value | None, name: str) -> ir.Value:
    """MoEExpertsQZP's int64 [E, H] input order as the int32 the GEMM reads, or (no order) an int32 [1, 1]
    placeholder the kernel never reads (MoEGemmSwiGLUQZ's `ordered` = 0)."""
    if order is None:
        return _int32_initializer(graph, f"{name}.no_order", [1, 1], lambda: np.zeros((1, 1), np.int32))
    tensor = _constant(order, "input orders")
    return _int32_initializer(graph, f"{order.name}.i32", list(tensor.shape),
                              lambda: np.ascontiguousarray(tensor.numpy().astype(np.int32)))


def zero_point_gemms(graph: ir.Graph, tape: ir.tape.Tape, pair, routing: list, weights: ir.Value, fields: dict,
                     domain: str, aot: bool) -> tuple[ir.Value, ir.Value]:
    """MoEExpertsQZ / MoEExpertsQZP: MoEGemmSwiGLUQZ (zero points; act-order: each expert's input order) and
    MoEGemmDownQZ; (inter [M_max, I], y_pairs [T*k, H])."""
    order = pair.w13_order
    w13, w2 = packed_codes(graph, pair.w13), packed_codes(graph, pair.w2)
    z13, z2 = packed_codes(graph, pair.w13_zeros, pad=True), packed_codes(graph, pair.w2_zeros, pad=True)
    inter = tape.op(MOE_GEMM_SWIGLU_QZ.name,
                    [pair.x, *routing, w13, pair.w13_scales, z13, input_order(graph, order, pair.experts.name)],
                    MOE_GEMM_SWIGLU_QZ.node_attributes(aot, **fields, ordered=int(order is not None)), domain=domain)
    return inter, tape.op(MOE_GEMM_DOWN_QZ.name, [inter, *routing, weights, w2, pair.w2_scales, z2],
                          MOE_GEMM_DOWN_QZ.node_attributes(aot, **fields), domain=domain)


def lower(model: ir.Model, domain: str = PLUGIN_DOMAIN, block_size: int = ALIGN_BLOCK, aot: bool = True
          ) -> ir.Model:
    graph = model.graph
    for pair in list(moe_pairs(graph, F8_OPS)):
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
        if pair.quant:
            bits, quant_block = pair.quant
            fields = {"top_k": k, "block_size": block_size, "bits": bits, "quant_block": quant_block}
        if pair.w13_zeros is not None:  # a quantized checkpoint's codes as stored (zero points, act-order)
            inter, y_pairs = zero_point_gemms(graph, tape, pair, routing, weights, fields, domain, aot)
        elif pair.f8:  # FP8 e4m3 experts (MoEExpertsF8): the GEMMs decode the bytes on the fly
            fields = {"top_k": k, "block_size": block_size}
            w13, w2 = packed_codes(graph, pair.w13), packed_codes(graph, pair.w2)
            inter = tape.op(MOE_GEMM_SWIGLU_F8.name, [pair.x, *routing, w13, pair.w13_scales],
                            MOE_GEMM_SWIGLU_F8.node_attributes(aot, **fields), domain=domain)
            y_pairs = tape.op(MOE_GEMM_DOWN_F8.name, [inter, *routing, weights, w2, pair.w2_scales],
                              MOE_GEMM_DOWN_F8.node_attributes(aot, **fields), domain=domain)
        elif pair.quant:  # weight-only int8 / int4 experts: the GEMMs dequantize on the fly
            w13, w2 = packed_codes(graph, pair.w13), packed_codes(graph, pair.w2)
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
