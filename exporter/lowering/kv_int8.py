"""int8 KV cache lowering (`build --kv-cache int8`): each layer's concat cache becomes int8 codes + float32 scales.

The canonical graph appends a call's keys and values to the past with one Concat per tensor, whose output is
the present and what attention reads:

    present.{i}.key = Concat(past_key_values.{i}.key, k_new, axis=2)              [B, G, P + T, D]

This lowering finds that Concat through the contract's names (not the traced op sequence) and rewrites it to

    codes, scale    = quantize(k_new)                                              [B, G, T, D] int8, [B, G, T, 1]
    present.{i}.key       = Concat(past_key_values.{i}.key, codes)       (int8)    [B, G, P + T, D]
    present.{i}.key_scale = Concat(past_key_values.{i}.key_scale, scale) (float32) [B, G, P + T, 1]
    what attention reads  = Cast(present codes), the scales applied where they are cheap:
                            scores = (q Cast(codes)^T) * scale^T, out = (probs * scale^T) Cast(codes)

quantize (symmetric, per row, kv head and token, in float32; contract.py KV_CACHE_KINDS): scale = max |x| / 127
over head_dim, codes = round_half_even(x / scale) (x / 1 where the scale is 0), clipped to [-127, 127].
`mixtral_ref/kv_quant.py` is the same arithmetic in torch (parity's reference, which multiplies codes by scales
before the products: the same sums in another order). Attention reads only the cache, the new tokens' own keys
and values included, so a prompt run in chunks and run whole give the same cache and logits. Applying the scales
to the scores and the probabilities (one per key slot) instead of to the cache (one per slot and head_dim
element) spares a pass over the whole cache at every step; where the graph reads the cache otherwise, the
lowering multiplies the cache out (Cast(codes) * scale) instead. The old Concat becomes dead and is removed.
B batch, G kv heads, P past slots, T new tokens, D head_dim.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError

from .common import tidy

INT8_MAX = 127.0


def _float_const(tape: ir.tape.Tape, value: float) -> ir.Value:
    return tape.op("Constant", [], {"value": ir.tensor(np.array(value, np.float32))})


def _quantize(tape: ir.tape.Tape, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """x [B, G, T, D] (graph dtype) -> codes [B, G, T, D] int8, scale [B, G, T, 1] float32."""
    xf = tape.op("Cast", [x], {"to": ir.DataType.FLOAT})
    axes = tape.op("Constant", [], {"value": ir.tensor(np.array([-1], np.int64))})
    amax = tape.op("ReduceMax", [tape.op("Abs", [xf]), axes], {"keepdims": 1})  # [B, G, T, 1]
    scale = tape.op("Div", [amax, _float_const(tape, INT8_MAX)])
    zero, one = _float_const(tape, 0.0), _float_const(tape, 1.0)
    safe = tape.op("Where", [tape.op("Greater", [scale, zero]), scale, one])
    rounded = tape.op("Round", [tape.op("Div", [xf, safe])])
    clipped = tape.op("Clip", [rounded, _float_const(tape, -INT8_MAX), _float_const(tape, INT8_MAX)])
    return tape.op("Cast", [clipped], {"to": ir.DataType.INT8}), scale


def _dequantize(tape: ir.tape.Tape, codes: ir.Value, scale: ir.Value, dtype: ir.DataType) -> ir.Value:
    """codes [B, G, S, D] int8 * scale [B, G, S, 1] -> [B, G, S, D] in the graph dtype."""
    x = tape.op("Mul", [tape.op("Cast", [codes], {"to": ir.DataType.FLOAT}), scale])
    return x if dtype == ir.DataType.FLOAT else tape.op("Cast", [x], {"to": dtype})


def _attention_matmul(old: ir.Value, kind: str) -> ir.Node | None:
    """The MatMul that reads the cache `old` as its input 1: keys through Transpose(perm 0,1,3,2) (scores =
    q k^T), values directly (out = probs v); None when the graph reads it any other way."""
    uses = list(old.uses())
    if kind == "key" and len(uses) == 1:
        transpose = uses[0][0]
        perm = transpose.attributes.get("perm")
        if transpose.op_type != "Transpose" or perm is None or list(perm.as_ints()) != [0, 1, 3, 2]:
            return None
        uses = list(transpose.outputs[0].uses())
    if len(uses) != 1:
        return None
    user, index = uses[0]
    return user if user.op_type == "MatMul" and index == 1 else None


def _fold_scales(graph: ir.Graph, old: ir.Value, codes: ir.Value, scale: ir.Value, kind: str) -> bool:
    """Attention reads Cast(codes) and applies the per-slot scales where they cost [.., T, S] instead of
    [.., S, D] multiplies: scores = (q Cast(codes)^T) * scale^T for keys, out = (probs * scale^T) Cast(codes)
    for values (the same products, summed in another order). False (nothing changed) where the graph does not
    read the cache through the canonical MatMuls."""
    matmul = _attention_matmul(old, kind)
    if matmul is None:
        return False
    dtype = old.type.dtype
    tape = ir.tape.Tape()
    read = tape.op("Cast", [codes], {"to": dtype})  # int8 -> the graph dtype: exact
    row = tape.op("Transpose", [scale], {"perm": [0, 1, 3, 2]})  # [B, G, 1, S]
    if dtype != ir.DataType.FLOAT:
        row = tape.op("Cast", [row], {"to": dtype})
    graph.insert_before(next(iter(old.uses()))[0], list(tape.nodes))
    old.replace_all_uses_with(read)
    read.shape, read.type = old.shape, old.type
    if kind == "key":  # scores [B, G, R*T, S] * [B, G, 1, S]
        scores = matmul.outputs[0]
        mul = ir.node("Mul", [scores, row])
        graph.insert_after(matmul, [mul])
        for user, index in list(scores.uses()):
            if user is not mul:
                user.replace_input_with(index, mul.outputs[0])
        mul.outputs[0].shape, mul.outputs[0].type = scores.shape, scores.type
    else:  # probs [B, G, R*T, S] * [B, G, 1, S], then MatMul with the codes
        probs = matmul.inputs[0]
        mul = ir.node("Mul", [probs, row])
        graph.insert_before(matmul, [mul])
        matmul.replace_input_with(0, mul.outputs[0])
        mul.outputs[0].shape, mul.outputs[0].type = probs.shape, probs.type
    return True


def _cache_concat(graph: ir.Graph, past: ir.Value, present: ir.Value) -> ir.Node:
    node = present.producer()
    if node is None or node.op_type != "Concat" or node.inputs[0] is not past or len(node.inputs) != 2:
        raise MixtralTrtError(f"int8 KV cache lowering: {present.name} is not Concat({past.name}, new) "
                              "(the canonical graph's concat cache)")
    return node


def lower_kv_int8(model: ir.Model, contract: GraphContract) -> ir.Model:
    """Store every layer's cache as int8 codes + scales (see the module docstring); returns the model."""
    if contract.attention != "concat":
        raise MixtralTrtError("int8 KV cache lowering: only the canonical graph's concat cache is supported")
    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    outputs = {v.name: n for n, v in enumerate(graph.outputs)}
    scale_inputs, scale_outputs = [], []
    for i in range(contract.config.num_layers):
        for kind in ("key", "value"):
            past, name = inputs[f"past_key_values.{i}.{kind}"], f"present.{i}.{kind}"
            old = graph.outputs[outputs[name]]
            concat = _cache_concat(graph, past, old)
            dtype = old.type.dtype
            past_scale = ir.Value(name=f"{past.name}_scale", type=ir.TensorType(ir.DataType.FLOAT),
                                  shape=ir.Shape([*past.shape[:3], 1]))
            past.type = ir.TensorType(ir.DataType.INT8)
            tape = ir.tape.Tape()
            codes, scale = _quantize(tape, concat.inputs[1])
            axis = {"axis": 2}
            present = tape.op("Concat", [past, codes], axis)
            present_scale = tape.op("Concat", [past_scale, scale], axis)
            graph.insert_before(concat, list(tape.nodes))
            graph.outputs[outputs[name]] = present
            if not _fold_scales(graph, old, present, present_scale, kind):
                tape = ir.tape.Tape()
                read = _dequantize(tape, present, present_scale, dtype)
                graph.insert_before(concat, list(tape.nodes))
                old.replace_all_uses_with(read)
                read.shape, read.type = old.shape, old.type
            shape = old.shape
            old.name = None  # the dead Concat keeps no contract name
            present.name, present.shape, present.type = name, shape, ir.TensorType(ir.DataType.INT8)
            present_scale.name, present_scale.shape = f"{name}_scale", ir.Shape([*shape[:3], 1])
            present_scale.type = ir.TensorType(ir.DataType.FLOAT)  # contract.KV_SCALE_DTYPE
            scale_inputs.append(past_scale)
            scale_outputs.append(present_scale)
    graph.inputs.extend(scale_inputs)  # the contract's order: every layer's codes, then every layer's scales
    graph.outputs.extend(scale_outputs)
    return tidy(model)
