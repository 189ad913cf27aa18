"""A one-layer canonical MoE graph of any size, lowered for `trt`, whose weights are shapes only (never read):
what the plugin-layer test drives at Mixtral 8x7B's sizes without allocating them."""

from __future__ import annotations

import onnx_ir as ir

ACT = {"fp32": ir.DataType.FLOAT, "fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}


def _shape_only(name: str, dtype: ir.DataType, shape: tuple[int, ...]) -> ir.Value:
    def fail():
        raise AssertionError(f"{name}: the plugin-layer test graph holds shapes only; nothing may read its data")

    shape = ir.Shape(shape)
    return ir.Value(name=name, shape=shape, type=ir.TensorType(dtype),
                    const_value=ir.LazyTensor(fail, dtype=dtype, shape=shape, name=name))


def _layer(dtype: str, experts: int, top_k: int, hidden: int, op: str, weights_of, attributes: dict) -> ir.Model:
    """router_logits [T, E], x [T, H] -> MoERouter + `op` (expert weights: `weights_of(act)`) -> y [T, H]."""
    from mixtral_trt.exporter.ops.spec import DOMAIN, MOE_ROUTER

    act = ACT[dtype]
    logits = ir.Value(name="router_logits", shape=ir.Shape(["T", experts]), type=ir.TensorType(act))
    x = ir.Value(name="x", shape=ir.Shape(["T", hidden]), type=ir.TensorType(act))
    tensors = weights_of(act)
    router = ir.node(MOE_ROUTER.name, [logits], domain=DOMAIN, attributes={"top_k": top_k}, num_outputs=2)
    weights, chosen = router.outputs
    moe = ir.node(op, [x, chosen, weights, *tensors], domain=DOMAIN, attributes=attributes)
    moe.outputs[0].shape, moe.outputs[0].type = ir.Shape(["T", hidden]), ir.TensorType(act)
    out = ir.node("Identity", [moe.outputs[0]])  # the MoE output is not the graph's output in an export either
    out.outputs[0].name, out.outputs[0].shape, out.outputs[0].type = "y", moe.outputs[0].shape, moe.outputs[0].type
    graph = ir.Graph([logits, x], [out.outputs[0]], nodes=[router, moe, out], initializers=tensors,
                     opset_imports={"": 21, DOMAIN: 1})
    return ir.Model(graph, ir_version=10)


def moe_layer(dtype: str, experts: int, top_k: int, hidden: int, inter: int, quant: str | None = None) -> ir.Model:
    """router_logits [T, E], x [T, H] -> MoERouter + MoEExperts (or MoEExpertsQ) -> y [T, H], lowered for `trt`."""
    from mixtral_trt.common.quant import QuantScheme
    from mixtral_trt.exporter.lowering import lower
    from mixtral_trt.exporter.ops.spec import MOE_EXPERTS
    from mixtral_trt.exporter.quantize import quantize_experts

    model = _layer(dtype, experts, top_k, hidden, MOE_EXPERTS.name, lambda act: [
        _shape_only("w13", act, (experts, 2 * inter, hidden)), _shape_only("w2", act, (experts, hidden, inter))], {})
    if quant:  # "int8" / "int4" in their default blocks, "int8-per-channel"
        scheme = QuantScheme(8, 0) if quant == "int8-per-channel" else QuantScheme.parse(quant)
        quantize_experts(model, scheme, dtype)
    return lower(model, "trt")


def moe_layer_stored(dtype: str, experts: int, top_k: int, hidden: int, inter: int, bits: int, group: int,
                     ordered: bool) -> ir.Model:
    """The same layer with a quantized checkpoint's experts as the export stores them: MoEExpertsQZ (codes, scales,
    zero points) or, `ordered`, MoEExpertsQZP (also each expert's w13 input order), lowered for `trt`."""
    from mixtral_trt.exporter.lowering import lower
    from mixtral_trt.exporter.ops.spec import MOE_EXPERTS_QZ, MOE_EXPERTS_QZP

    u8 = ir.DataType.UINT8

    def stored(act):
        tensors = []
        for name, rows, k in (("w13", 2 * inter, hidden), ("w2", hidden, inter)):
            tensors += [_shape_only(f"{name}.codes", u8, (experts, rows, k * bits // 8)),
                        _shape_only(f"{name}.scales", act, (experts, rows, k // group))]
        zeros = [_shape_only(f"{name}.zeros", u8, (experts, rows, -(-k // group * bits // 8)))
                 for name, rows, k in (("w13", 2 * inter, hidden), ("w2", hidden, inter))]
        order = [_shape_only("w13.input_order", ir.DataType.INT64, (experts, hidden))] if ordered else []
        return tensors + zeros + order

    op = MOE_EXPERTS_QZP if ordered else MOE_EXPERTS_QZ
    return lower(_layer(dtype, experts, top_k, hidden, op.name, stored, {"bits": bits, "block_size": group}), "trt")


def moe_layer_f8(dtype: str, experts: int, top_k: int, hidden: int, inter: int) -> ir.Model:
    """The same layer with FP8 e4m3 experts on the MoEGemmSwiGLUF8 / MoEGemmDownF8 plugins, as a trt lowering of
    FP8 experts would emit them (no canonical FP8 experts op is exported yet, docs/GPU.md): the per-channel int8
    layer lowered (one byte per weight as INT32 words, one scale per row: the F8 plugins' inputs exactly) with its
    two Q GEMMs retyped to the F8 ones and their fields."""
    return as_f8(moe_layer(dtype, experts, top_k, hidden, inter, quant="int8-per-channel"))


def as_f8(model: ir.Model) -> ir.Model:
    """A per-channel int8 `trt`-lowered model with its MoEGemmSwiGLUQ / MoEGemmDownQ retyped to the F8 GEMMs (their
    inputs are the same tensors: one byte per weight as INT32 words, one scale per row)."""
    from mixtral_trt.plugins import MOE_GEMM_DOWN_F8, MOE_GEMM_DOWN_Q, MOE_GEMM_SWIGLU_F8, MOE_GEMM_SWIGLU_Q

    for node in model.graph:
        spec = {MOE_GEMM_SWIGLU_Q.name: MOE_GEMM_SWIGLU_F8, MOE_GEMM_DOWN_Q.name: MOE_GEMM_DOWN_F8}.get(node.op_type)
        if spec is None:
            continue
        assert node.attributes["quant_block"].as_int() == 0 and node.attributes["bits"].as_int() == 8
        node.op_type = spec.name
        for name in ("bits", "quant_block"):
            node.attributes.pop(name)
    return model
