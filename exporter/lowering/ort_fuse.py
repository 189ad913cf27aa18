"""Fused RMSNorm for ONNX Runtime: the traced norm chain becomes one `SimplifiedLayerNormalization` node.

The reference RMSNorm traces to Pow(x, 2) -> ReduceMean(-1) -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x, .)
-> Mul(weight, .) (with Casts to and from float32 around it in fp16/bf16 exports): seven nodes per norm,
2L + 1 norms per step. ONNX Runtime's own fusion looks for Div(x, Sqrt(...)) and misses the Reciprocal
form, so the chain stays seven kernel launches, each with its thread-pool hand-off. The replacement is
ORT's contrib op (ONNX domain, computed in float32 with `stash_type=1`), which its optimizer then fuses
with the residual Add before it (SkipSimplifiedLayerNormalization).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .common import swap_in


def _only_use(value: ir.Value, op: str) -> ir.Node | None:
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0][0] if isinstance(uses[0], tuple) else uses[0].node
    return node if node.op_type == op and node.domain in ("", "ai.onnx") else None


def _scalar(value: ir.Value | None) -> float | None:
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _match(pow_node: ir.Node):
    """(input, weight, epsilon, nodes, output) of one norm chain starting at its Pow, or None."""
    xf = pow_node.inputs[0]
    if _scalar(pow_node.inputs[1]) != 2.0:
        return None
    mean = _only_use(pow_node.outputs[0], "ReduceMean")
    add = mean and _only_use(mean.outputs[0], "Add")
    sqrt = add and _only_use(add.outputs[0], "Sqrt")
    rec = sqrt and _only_use(sqrt.outputs[0], "Reciprocal")
    scaled = rec and _only_use(rec.outputs[0], "Mul")
    if scaled is None or xf not in scaled.inputs or not mean.attributes.get("keepdims", ir.AttrInt64("k", 1)).as_int():
        return None
    axes = mean.inputs[1] if len(mean.inputs) > 1 else None
    if axes is None or axes.const_value is None or axes.const_value.numpy().reshape(-1).tolist() != [-1]:
        return None
    eps = _scalar(add.inputs[1]) if add.inputs[0] is mean.outputs[0] else _scalar(add.inputs[0])
    if eps is None:
        return None
    nodes = [pow_node, mean, add, sqrt, rec, scaled]
    x, out = xf, scaled.outputs[0]
    cast_in = xf.producer()
    if cast_in is not None and cast_in.op_type == "Cast":  # fp16 / bf16 exports compute the norm in float32
        cast_out = _only_use(out, "Cast")
        if cast_out is None or len(xf.uses()) != 2:  # Pow and the Mul only
            return None
        x, out = cast_in.inputs[0], cast_out.outputs[0]
        nodes += [cast_in, cast_out]
    final = _only_use(out, "Mul")
    if final is None:
        return None
    weight = final.inputs[0] if final.inputs[1] is out else final.inputs[1]
    if weight.const_value is None or len(weight.shape or ()) != 1:
        return None
    return x, weight, eps, nodes + [final], final.outputs[0]


def fuse_rms_norms(model: ir.Model) -> int:
    """Replace every matching norm chain; returns the number fused."""
    graph, count = model.graph, 0
    for node in list(graph):
        if node.op_type != "Pow" or node.domain not in ("", "ai.onnx") or node.graph is None:
            continue
        found = _match(node)
        if found is None:
            continue
        x, weight, eps, nodes, out = found
        fused = ir.node("SimplifiedLayerNormalization", [x, weight], name=f"{node.name}.rms_norm",
                        attributes={"axis": -1, "epsilon": float(np.float32(eps)), "stash_type": 1})
        swap_in(graph, fused, out, nodes)
        count += 1
    return count
