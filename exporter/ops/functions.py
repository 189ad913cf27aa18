"""ONNX function bodies of the custom ops in standard ops: the `portable` lowering, and what lets ONNX
Runtime run the canonical graph (it inlines model-local functions).

The experts body is the dense formulation (every expert on every token, then a [T, E] routing matrix):
correct everywhere, slower than sparse dispatch. T tokens, E experts, k, H hidden, I intermediate.
"""

from __future__ import annotations

import onnx
from onnxscript import FLOAT, INT32, INT64, UINT8, script, values
from onnxscript import opset20 as op

from .spec import (
    DOMAIN,
    LINEAR_Q,
    LINEAR_QZ,
    MOE_EXPERTS,
    MOE_EXPERTS_F8,
    MOE_EXPERTS_Q,
    MOE_EXPERTS_QZ,
    MOE_EXPERTS_QZP,
    MOE_ROUTER,
    OPSET_VERSION,
)

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


@script(mixtral, default_opset=op)
def Dequantize(codes, scales, bits: int):
    """codes uint8 [E, N, K*bits/8], scales [E, N] or [E, N, G] -> weights [E, N, K] (scales' dtype)."""
    width = op.Constant(value_int=bits)  # 8 or 4
    shifts = op.Cast(op.Range(op.Constant(value_int=0), op.Constant(value_int=8), width), to=UINT8.dtype)  # [8/bits]
    mask = op.Cast(op.Sub(op.Pow(op.Constant(value_int=2), width), op.Constant(value_int=1)), to=UINT8.dtype)
    unpacked = op.BitwiseAnd(op.BitShift(op.Unsqueeze(codes, op.Constant(value_ints=[-1])), shifts,
                                         direction="RIGHT"), mask)  # [E, N, K*bits/8, 8/bits], low bits first
    e_n = op.Shape(codes, start=0, end=2)
    q = op.Reshape(unpacked, op.Concat(e_n, op.Constant(value_ints=[-1]), axis=0))  # [E, N, K]
    zero = op.Pow(op.Constant(value_float=2.0), op.Cast(op.Sub(width, op.Constant(value_int=1)), to=FLOAT.dtype))
    centred = op.Sub(op.Cast(q, to=FLOAT.dtype), zero)
    groups = op.Reshape(op.Cast(scales, to=FLOAT.dtype), op.Concat(e_n, op.Constant(value_ints=[-1]), axis=0))
    grouped = op.Reshape(centred, op.Concat(op.Shape(groups), op.Constant(value_ints=[-1]), axis=0))  # [E,N,G,K/G]
    w = op.Reshape(op.Mul(grouped, op.Unsqueeze(groups, op.Constant(value_ints=[-1]))), op.Shape(q))
    weights = op.CastLike(w, scales)
    return weights


@script(mixtral, default_opset=op)
def DequantizeZ(codes, scales, zeros, bits: int):
    """Dequantize with zero points: zeros uint8 [E, N, ceil(G*bits/8)] packed like the codes, one per group."""
    width = op.Constant(value_int=bits)
    shifts = op.Cast(op.Range(op.Constant(value_int=0), op.Constant(value_int=8), width), to=UINT8.dtype)
    mask = op.Cast(op.Sub(op.Pow(op.Constant(value_int=2), width), op.Constant(value_int=1)), to=UINT8.dtype)
    minus_one = op.Constant(value_ints=[-1])
    unpacked = op.BitwiseAnd(op.BitShift(op.Unsqueeze(codes, minus_one), shifts, direction="RIGHT"), mask)
    e_n = op.Shape(codes, start=0, end=2)
    q = op.Reshape(unpacked, op.Concat(e_n, minus_one, axis=0))  # [E, N, K]
    zunpacked = op.BitwiseAnd(op.BitShift(op.Unsqueeze(zeros, minus_one), shifts, direction="RIGHT"), mask)
    groups = op.Reshape(op.Cast(scales, to=FLOAT.dtype), op.Concat(e_n, minus_one, axis=0))  # [E, N, G]
    g = op.Shape(groups, start=2, end=3)
    z = op.Slice(op.Reshape(zunpacked, op.Concat(e_n, minus_one, axis=0)), op.Constant(value_ints=[0]), g,
                 op.Constant(value_ints=[2]))  # [E, N, G] (4-bit: the padding nibble dropped)
    grouped = op.Reshape(op.Cast(q, to=FLOAT.dtype), op.Concat(op.Shape(groups), minus_one, axis=0))  # [E,N,G,K/G]
    centred = op.Sub(grouped, op.Unsqueeze(op.Cast(z, to=FLOAT.dtype), minus_one))
    w = op.Reshape(op.Mul(centred, op.Unsqueeze(groups, minus_one)), op.Shape(q))
    weights = op.CastLike(w, scales)
    return weights


@script(mixtral, default_opset=op)
def MoEExpertsQZ(x, experts, weights, w13_codes, w13_scales, w2_codes, w2_scales, w13_zeros, w2_zeros, bits: int,
                 block_size: int):
    w13 = DequantizeZ(w13_codes, w13_scales, w13_zeros, bits=bits)  # [E, 2I, H]
    w2 = DequantizeZ(w2_codes, w2_scales, w2_zeros, bits=bits)  # [E, H, I]
    y = MoEExperts(x, experts, weights, w13, w2)
    return y


@script(mixtral, default_opset=op)
def MoEExpertsQZP(x, experts, weights, w13_codes, w13_scales, w2_codes, w2_scales, w13_zeros, w2_zeros, w13_order,
                  bits: int, block_size: int):
    ordered = DequantizeZ(w13_codes, w13_scales, w13_zeros, bits=bits)  # [E, 2I, H], column j = input order[e, j]
    columns = op.Expand(op.Unsqueeze(w13_order, op.Constant(value_ints=[1])), op.Shape(ordered))  # [E, 2I, H]
    # [E, 2I, H] in the inputs' own order (a permutation: every element of the copy is written)
    w13 = op.ScatterElements(ordered, columns, ordered, axis=2)
    w2 = DequantizeZ(w2_codes, w2_scales, w2_zeros, bits=bits)  # [E, H, I]
    y = MoEExperts(x, experts, weights, w13, w2)
    return y


@script(mixtral, default_opset=op)
def LinearQZ(x, codes, scales, zeros, bits: int, block_size: int):
    one = op.Constant(value_ints=[0])
    w = op.Squeeze(DequantizeZ(op.Unsqueeze(codes, one), op.Unsqueeze(scales, one), op.Unsqueeze(zeros, one),
                               bits=bits), one)  # [N, K]
    y = op.MatMul(x, op.Transpose(w, perm=[1, 0]))  # [..., N]
    return y


@script(mixtral, default_opset=op)
def DequantizeF8(codes, scales):
    """e4m3fn bytes uint8 [E, N, K], scales [E, N] -> weights [E, N, K] (scales' dtype): sign bit, 4-bit exponent
    (bias 7; 0: subnormal m * 2^-9), 3 mantissa bits; 0x7f / 0xff NaN; times the row's scale in float32."""
    c = op.Cast(codes, to=INT32.dtype)  # [E, N, K]
    m = op.Cast(op.BitwiseAnd(c, op.Cast(op.Constant(value_int=7), to=INT32.dtype)), to=FLOAT.dtype)
    e = op.Cast(op.BitwiseAnd(op.Div(c, op.Cast(op.Constant(value_int=8), to=INT32.dtype)),
                              op.Cast(op.Constant(value_int=15), to=INT32.dtype)), to=FLOAT.dtype)
    negative = op.Greater(c, op.Cast(op.Constant(value_int=127), to=INT32.dtype))
    eighth = op.Constant(value_float=0.125)
    two = op.Constant(value_float=2.0)
    normal = op.Mul(op.Add(op.Constant(value_float=1.0), op.Mul(m, eighth)),
                    op.Pow(two, op.Sub(e, op.Constant(value_float=7.0))))
    subnormal = op.Mul(m, op.Constant(value_float=0.001953125))  # m * 2^-9
    magnitude = op.Where(op.Equal(e, op.Constant(value_float=0.0)), subnormal, normal)
    nan = op.And(op.Equal(e, op.Constant(value_float=15.0)), op.Equal(m, op.Constant(value_float=7.0)))
    not_a_number = op.Cast(op.Constant(value_string="NaN"), to=FLOAT.dtype)
    value = op.Where(nan, not_a_number, op.Mul(magnitude, op.Where(negative, op.Constant(value_float=-1.0),
                                                                          op.Constant(value_float=1.0))))
    w = op.Mul(value, op.Unsqueeze(op.Cast(scales, to=FLOAT.dtype), op.Constant(value_ints=[-1])))
    weights = op.CastLike(w, scales)
    return weights


@script(mixtral, default_opset=op)
def MoEExpertsF8(x, experts, weights, w13_codes, w13_scales, w2_codes, w2_scales):
    w13 = DequantizeF8(w13_codes, w13_scales)  # [E, 2I, H]
    w2 = DequantizeF8(w2_codes, w2_scales)  # [E, H, I]
    y = MoEExperts(x, experts, weights, w13, w2)
    return y


@script(mixtral, default_opset=op)
def MoEExpertsQ(x, experts, weights, w13_codes, w13_scales, w2_codes, w2_scales, bits: int, block_size: int):
    w13 = Dequantize(w13_codes, w13_scales, bits=bits)  # [E, 2I, H]
    w2 = Dequantize(w2_codes, w2_scales, bits=bits)  # [E, H, I]
    y = MoEExperts(x, experts, weights, w13, w2)
    return y


@script(mixtral, default_opset=op)
def LinearQ(x, codes, scales, bits: int, block_size: int):
    one = op.Constant(value_ints=[0])
    w = op.Squeeze(Dequantize(op.Unsqueeze(codes, one), op.Unsqueeze(scales, one), bits=bits), one)  # [N, K]
    y = op.MatMul(x, op.Transpose(w, perm=[1, 0]))  # [..., N]
    return y


_BODIES = {MOE_ROUTER.name: MoERouter, MOE_EXPERTS.name: MoEExperts, MOE_EXPERTS_Q.name: MoEExpertsQ,
           LINEAR_Q.name: LinearQ, MOE_EXPERTS_QZ.name: MoEExpertsQZ, LINEAR_QZ.name: LinearQZ,
           MOE_EXPERTS_QZP.name: MoEExpertsQZP, MOE_EXPERTS_F8.name: MoEExpertsF8}
HELPERS = (Dequantize, DequantizeZ, DequantizeF8)  # functions the bodies call, shipped alongside them


def function_protos() -> list[onnx.FunctionProto]:
    """The FunctionProto of every op, checked against its spec (names of inputs, outputs, attributes), and of
    the helper functions they call."""
    protos = [helper.to_function_proto() for helper in HELPERS]
    for spec in (MOE_ROUTER, MOE_EXPERTS, MOE_EXPERTS_Q, LINEAR_Q, MOE_EXPERTS_QZ, LINEAR_QZ, MOE_EXPERTS_QZP,
                 MOE_EXPERTS_F8):
        proto = _BODIES[spec.name].to_function_proto()
        assert list(proto.input) == [t.name for t in spec.inputs], spec.name
        assert list(proto.output) == [t.name for t in spec.outputs], spec.name
        assert list(proto.attribute) == [a.name for a in spec.attributes], spec.name
        protos.append(proto)
    return protos


def attach_functions(model) -> None:
    """Add every op body (and helper) to an onnx_ir Model's local functions, keeping those present."""
    import onnx_ir as ir

    for proto in function_protos():
        fn = ir.serde.deserialize_function(proto)
        model.functions.setdefault(fn.identifier(), fn)
