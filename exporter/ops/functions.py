"""ONNX function bodies of the custom ops in standard ops: the `portable` lowering, and what lets ONNX
Runtime run the canonical graph (it inlines model-local functions).

The experts body is the dense formulation (every expert on every token, then a [T, E] routing matrix):
correct everywhere, slower than sparse dispatch. T tokens, E experts, k, H hidden, I intermediate.
"""

from __future__ import annotations

import onnx
from onnxscript import FLOAT, INT32, INT64, script, values
from onnxscript import opset20 as op

from .spec import DOMAIN, MOE_EXPERTS, MOE_ROUTER, OPSET_VERSION

ONNX_OPSET = 20  # the default-domain opset of the function bodies and of the exported graph
mixtral = values.Opset(DOMAIN, OPSET_VERSION)


@script(mixtral, default_opset=op)
def MoERouter(router_logits, top_k: int):
    logits = op.Cast(router_logits, to=FLOAT.dtype)  # [T, E] float32
    k = op.Reshape(op.Constant(value_int=top_k), op.Constant(value_ints=[1]))
    top, idx = op.TopK(logits, k, axis=-1, largest=1, sorted=1)  # [T, k]
    weights = op.Softmax(top, axis=-1)
    experts = op.Cast(idx, to=INT32.dtype)
    return weights, experts


@script(mixtral, default_opset=op)
def MoEExperts(x, experts, weights, w13, w2):
    h13 = op.MatMul(x, op.Transpose(w13, perm=[0, 2, 1]))  # [E, T, 2I]
    gate, up = op.Split(h13, axis=2, num_outputs=2)  # [E, T, I] each
    act = op.Mul(op.Mul(gate, op.Sigmoid(gate)), up)  # [E, T, I]
    ye = op.MatMul(act, op.Transpose(w2, perm=[0, 2, 1]))  # [E, T, H]
    t = op.Shape(x, start=0, end=1)
    e = op.Shape(w13, start=0, end=1)
    zeros = op.ConstantOfShape(op.Concat(t, e, axis=0))  # [T, E] float32
    dense = op.ScatterElements(zeros, op.Cast(experts, to=INT64.dtype), weights, axis=1)  # [T, E]
    combine = op.Unsqueeze(op.Transpose(dense, perm=[1, 0]), op.Constant(value_ints=[2]))  # [E, T, 1]
    y32 = op.ReduceSum(op.Mul(op.Cast(ye, to=FLOAT.dtype), combine), op.Constant(value_ints=[0]), keepdims=0)
    y = op.CastLike(y32, x)  # [T, H]
    return y


_BODIES = {MOE_ROUTER.name: MoERouter, MOE_EXPERTS.name: MoEExperts}


def function_protos() -> list[onnx.FunctionProto]:
    """The FunctionProto of every op, checked against its spec (names of inputs, outputs, attributes)."""
    protos = []
    for spec in (MOE_ROUTER, MOE_EXPERTS):
        proto = _BODIES[spec.name].to_function_proto()
        assert list(proto.input) == [t.name for t in spec.inputs], spec.name
        assert list(proto.output) == [t.name for t in spec.outputs], spec.name
        assert list(proto.attribute) == [a.name for a in spec.attributes], spec.name
        protos.append(proto)
    return protos
