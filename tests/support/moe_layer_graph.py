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


def moe_layer(dtype: str, experts: int, top_k: int, hidden: int, inter: int, quant: str | None = None) -> ir.Model:
    """router_logits [T, E], x [T, H] -> MoERouter + MoEExperts (or MoEExpertsQ) -> y [T, H], lowered for `trt`."""
    from mixtral_trt.common.quant import QuantScheme
    from mixtral_trt.exporter.lowering import lower
    from mixtral_trt.exporter.ops.spec import DOMAIN, MOE_EXPERTS, MOE_ROUTER
    from mixtral_trt.exporter.quantize import quantize_experts

    act = ACT[dtype]
    logits = ir.Value(name="router_logits", shape=ir.Shape(["T", experts]), type=ir.TensorType(act))
    x = ir.Value(name="x", shape=ir.Shape(["T", hidden]), type=ir.TensorType(act))
    w13 = _shape_only("w13", act, (experts, 2 * inter, hidden))
    w2 = _shape_only("w2", act, (experts, hidden, inter))
    router = ir.node(MOE_ROUTER.name, [logits], domain=DOMAIN, attributes={"top_k": top_k}, num_outputs=2)
    weights, chosen = router.outputs
    moe = ir.node(MOE_EXPERTS.name, [x, chosen, weights, w13, w2], domain=DOMAIN)
    moe.outputs[0].shape, moe.outputs[0].type = ir.Shape(["T", hidden]), ir.TensorType(act)
    out = ir.node("Identity", [moe.outputs[0]])  # the MoE output is not the graph's output in an export either
    out.outputs[0].name, out.outputs[0].shape, out.outputs[0].type = "y", moe.outputs[0].shape, moe.outputs[0].type
    graph = ir.Graph([logits, x], [out.outputs[0]], nodes=[router, moe, out], initializers=[w13, w2],
                     opset_imports={"": 21, DOMAIN: 1})
    model = ir.Model(graph, ir_version=10)
    if quant:
        quantize_experts(model, QuantScheme.parse(quant), dtype)
    return lower(model, "trt")
