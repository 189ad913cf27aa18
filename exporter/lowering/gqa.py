"""GroupQueryAttention lowering: each layer's attention becomes one `com.microsoft::GroupQueryAttention`.

The canonical graph attends with explicit ops: rotary embedding, Concat(past, new) into the present,
grouped scores, the additive mask from attention_mask, softmax. This lowering finds each layer by what the
graph contract and the weight names guarantee, not by the traced op sequence:

    q, k, v = the MatMul outputs behind model.layers.{i}.attn.w{q,k,v}.weight      [B, S, N*D], [B, S, G*D]
              (or the MatMulNBits / LinearQ outputs reading its codes, in a quantized export)
    past    = inputs past_key_values.{i}.key/value;  present = outputs present.{i}.key/value
    out     = the input of the MatMul behind model.layers.{i}.attn.wo.weight         [B, S, N*D]

and puts one GroupQueryAttention(q, k, v, past_k, past_v, seqlens_k, total_sequence_length, cos, sin)
between them; everything in between becomes dead and is removed. Where a layer's q, k and v projections are the
same op over the same input with constant weights (MatMul over a Transpose, MatMulNBits, our Linear /
LinearBF16 / LinearQ; no zero points, act-order indices or bias), they become one node over the weights
concatenated along the output rows, and the op takes the packed query [B, S, (N + 2G) D] with no key and value:
one weight node a layer instead of three, one thread-pool hand-off instead of three per decode step.
The op applies the rotary embedding itself
(do_rotary=1, rotate-half layout: rotary_interleaved=0, cos/sin tables [max_seq, D/2] computed by the
reference's own `rope_cos_sin`), the causal mask, the sliding window (local_window_size = sliding_window,
the reference's "query sees the W most recent slots") and the scale D^-0.5.

Semantics change with it (contract.extra["attention"] = "gqa", docs/ARCHITECTURE.md): seqlens_k =
sum(attention_mask) - 1 and total_sequence_length = attention_mask's width, as onnxruntime-genai computes
them; each row's tokens sit right-padded in the cache and a token's position is its slot, so there is no
position_ids input. The past may be the present's own buffer (shared, written in place). Measured with
onnxruntime 1.32 on CPU: head_dim must be a multiple of 16 with the rotary inside the op.
B batch, S new tokens, N query heads, G kv heads, D head_dim.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.dtypes import torch_dtype
from mixtral_trt.common.errors import MixtralTrtError

from .common import tidy

MS_DOMAIN = "com.microsoft"
WEIGHT = "model.layers.{layer}.attn.{name}.weight"


def check_gqa(contract: GraphContract) -> None:
    """Refuse graphs the op cannot run, before any work."""
    cfg = contract.config
    if cfg.head_dim % 16:
        raise MixtralTrtError(f"--backend ort-gqa: head_dim {cfg.head_dim} is not a multiple of 16, which "
                              "GroupQueryAttention's rotary embedding needs (use --backend ort)")
    if contract.dtype not in ("fp32", "fp16"):
        raise MixtralTrtError(f"--backend ort-gqa builds fp32/fp16 exports; this one is {contract.dtype}")


# export --quantize's projections (after the ort lowering or on our ops), and float ones on our ops (cpu_kernels)
DERIVED = (("{}.codes.nbits", "MatMulNBits"), ("{}.codes", "LinearQ"), ("{}.bf16", "LinearBF16"), ("{}", "Linear"))


def projection(graph: ir.Graph, layer: int, name: str) -> ir.Node:
    """The MatMul(x, Transpose(W)) of a Linear weight (the layout torch.onnx gives nn.Linear), or the node of
    another form reading it (DERIVED: MatMulNBits after the ort lowering, our library's LinearQ / LinearBF16 /
    Linear): x is input 0 and the projection output 0 in every case."""
    key = WEIGHT.format(layer=layer, name=name)
    for pattern, op in DERIVED:
        stored = graph.initializers.get(pattern.format(key))
        users = [node for node, index in stored.uses() if node.op_type == op and index == 1] if stored else []
        if len(users) == 1:
            return users[0]
    weight = graph.initializers.get(key)
    if weight is None:
        raise MixtralTrtError(f"attention lowering: the graph has no weight {key}")
    for user, _ in weight.uses():
        if user.op_type != "Transpose":
            continue
        matmuls = [node for node, index in user.outputs[0].uses() if node.op_type == "MatMul" and index == 1]
        if len(matmuls) == 1:
            return matmuls[0]
    raise MixtralTrtError(f"attention lowering: {key} does not feed one MatMul through a Transpose")


# the ops a layer's q, k, v projections can run as (DERIVED, or MatMul over a Transpose of the weight), each with the
# input indices of its weight operands, which are row-major over the N outputs: packing q, k, v is concatenating
# them along axis 0
PACKABLE = {"MatMulNBits": (1, 2), "LinearQ": (1, 2), "LinearBF16": (1,), "Linear": (1,), "MatMul": (1,)}


def _concat_initializer(graph: ir.Graph, values: list[ir.Value], name: str) -> ir.Value:
    """A new initializer `name` = the constant `values` concatenated along axis 0, computed lazily while saving."""
    tensors = [v.const_value for v in values]
    shape = (sum(int(t.shape[0]) for t in tensors), *(int(d) for d in tensors[0].shape[1:]))
    lazy = ir.LazyTensor(lambda: ir.Tensor(np.concatenate([t.numpy() for t in tensors]), name=name),
                         dtype=tensors[0].dtype, shape=ir.Shape(shape), name=name)
    value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(tensors[0].dtype), const_value=lazy)
    graph.register_initializer(value)
    return value


def _weight_operands(node: ir.Node) -> list[ir.Value] | None:
    """The constant weight operands of a projection node (PACKABLE; MatMul: the W behind its Transpose), or None
    where the node has other inputs (zero points, act-order indices, a bias) or a non-constant weight."""
    if node.op_type not in PACKABLE:
        return None
    if node.op_type == "MatMul":
        transpose = node.inputs[1].producer()
        if transpose is None or transpose.op_type != "Transpose" or transpose.attributes.get("perm") is None:
            return None
        weights = [transpose.inputs[0]]
    else:
        if any(v is not None for v in node.inputs[len(PACKABLE[node.op_type]) + 1:]):
            return None
        weights = [node.inputs[i] for i in PACKABLE[node.op_type]]
    return weights if all(w is not None and w.const_value is not None for w in weights) else None


def _packed_qkv(graph: ir.Graph, layer: int, nodes: list[ir.Node]) -> ir.Node | None:
    """One projection node computing [q | k | v] ([B, S, (N + 2G) D]) from the three of a layer, where they are
    the same op over the same input with row-major constant weights (GroupQueryAttention then takes the packed
    query: one weight node a layer instead of three); None otherwise (the three stay as they are)."""
    first = nodes[0]
    operands = [_weight_operands(n) for n in nodes]
    if any(o is None for o in operands) or len({(n.op_type, n.domain) for n in nodes}) != 1:
        return None
    if any(n.inputs[0] is not first.inputs[0] for n in nodes):
        return None
    attributes = {k: a.value for k, a in first.attributes.items()}
    if first.op_type == "MatMulNBits":
        if any({k: a.value for k, a in n.attributes.items() if k != "N"} != {k: v for k, v in attributes.items()
                                                                           if k != "N"} for n in nodes):
            return None
        attributes["N"] = sum(n.attributes["N"].as_int() for n in nodes)
    elif any({k: a.value for k, a in n.attributes.items()} != attributes for n in nodes):
        return None
    name = f"model.layers.{layer}.attn.wqkv"
    packed = [_concat_initializer(graph, list(column), f"{name}.{i}") for i, column in
              enumerate(zip(*operands, strict=True))]
    if first.op_type == "MatMul":
        transpose = ir.node("Transpose", packed, {"perm": [1, 0]}, name=f"{name}.transpose")
        graph.insert_before(first, [transpose])
        packed = [transpose.outputs[0]]
    node = ir.node(first.op_type, [first.inputs[0], *packed], attributes=attributes, domain=first.domain,
                   name=f"{name}.proj")
    graph.insert_before(first, [node])
    out = node.outputs[0]
    q_shape = first.outputs[0].shape
    out.type = first.outputs[0].type
    if q_shape is not None and len(q_shape) == 3:
        out.shape = ir.Shape([q_shape[0], q_shape[1], None])
    return node


def _rope_tables(contract: GraphContract) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [max_seq, D/2] in the graph dtype, the numbers the reference computes."""
    import torch

    from mixtral_trt.mixtral_ref.layers import rope_cos_sin

    cfg = contract.config
    positions = torch.arange(contract.max_seq)[None]  # [1, C]
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, torch_dtype(contract.dtype))  # [1, C, D]
    half = cfg.head_dim // 2  # rotate-half layout: the two halves repeat the same angles
    return cos[0, :, :half].contiguous().numpy(), sin[0, :, :half].contiguous().numpy()


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    tensor = ir.tensor(array, name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def rope_initializers(graph: ir.Graph, contract: GraphContract) -> tuple[ir.Value, ir.Value]:
    """The rotary tables cos, sin [max_seq, D/2] (rotate-half layout) as initializers of `graph`."""
    cos, sin = _rope_tables(contract)
    return _initializer(graph, "attn.rope.cos_cache", cos), _initializer(graph, "attn.rope.sin_cache", sin)


def splice_attention(graph: ir.Graph, layer: int, node: ir.Node) -> ir.Value:
    """Insert `node` (a layer's attention as one op, output 0 [B, S, N*D]) before the layer's wo projection and
    make it the projection's input; returns that output. The attention ops it replaces become dead."""
    o = projection(graph, layer, "wo")
    # an act-order checkpoint's wo reads its features through a Gather (exporter/quantize_stored.py)
    order = o.inputs[0].producer()
    entry = order if order is not None and order.op_type == "Gather" and order.name.endswith(".order") else o
    graph.insert_before(entry, [node])
    out = node.outputs[0]
    out.type, out.shape = entry.inputs[0].type, entry.inputs[0].shape
    entry.replace_input_with(0, out)
    return out


def _lengths(graph: ir.Graph, mask: ir.Value) -> tuple[list[ir.Node], ir.Value, ir.Value]:
    """seqlens_k = sum(mask, axis 1) - 1 [B] int32 and total_sequence_length = mask width (int32 scalar)."""
    tape = ir.tape.Tape()
    one = tape.op("Constant", [], {"value": ir.tensor(np.array([1], np.int64))})
    tokens = tape.op("ReduceSum", [mask, one], {"keepdims": 0})  # [B]
    seqlens_k = tape.op("Cast", [tape.op("Sub", [tokens, one])], {"to": ir.DataType.INT32})
    width = tape.op("Gather", [tape.op("Shape", [mask]), tape.op("Constant", [], {"value": ir.tensor(
        np.array(1, np.int64))})], {"axis": 0})
    total = tape.op("Cast", [width], {"to": ir.DataType.INT32})
    return list(tape.nodes), seqlens_k, total


def lower_attention(model: ir.Model, contract: GraphContract) -> ir.Model:
    """Replace every layer's attention by GroupQueryAttention (see the module docstring)."""
    check_gqa(contract)
    graph, cfg = model.graph, contract.config
    inputs = {v.name: v for v in graph.inputs}
    outputs = {v.name: n for n, v in enumerate(graph.outputs)}
    cos, sin = rope_initializers(graph, contract)
    nodes, seqlens_k, total = _lengths(graph, inputs["attention_mask"])
    graph.insert_before(next(iter(graph)), nodes)
    attributes = {"num_heads": cfg.num_heads, "kv_num_heads": cfg.num_kv_heads, "scale": cfg.head_dim ** -0.5,
                  "do_rotary": 1, "rotary_interleaved": 0}
    if cfg.sliding_window is not None:
        attributes["local_window_size"] = cfg.sliding_window
    for i in range(cfg.num_layers):
        q, k, v = (projection(graph, i, name) for name in ("wq", "wk", "wv"))
        packed = _packed_qkv(graph, i, [q, k, v])
        qkv = [packed.outputs[0], None, None] if packed is not None else [q.outputs[0], k.outputs[0], v.outputs[0]]
        node = ir.node("GroupQueryAttention",
                       inputs=[*qkv, inputs[f"past_key_values.{i}.key"],
                               inputs[f"past_key_values.{i}.value"], seqlens_k, total, cos, sin],
                       attributes=attributes, domain=MS_DOMAIN, num_outputs=3, name=f"layers.{i}.attn.gqa")
        splice_attention(graph, i, node)
        _, present_k, present_v = node.outputs
        for new, name in ((present_k, f"present.{i}.key"), (present_v, f"present.{i}.value")):
            old = graph.outputs[outputs[name]]
            new.type, new.shape = old.type, ir.Shape([old.shape[0], old.shape[1], "present_or_capacity",
                                                      old.shape[3]])
            graph.outputs[outputs[name]] = new
            old.name = None  # the dead Concat keeps no contract name
            new.name = name
        for name in (f"past_key_values.{i}.key", f"past_key_values.{i}.value"):
            past = inputs[name]
            past.shape = ir.Shape([past.shape[0], past.shape[1], "past_or_capacity", past.shape[3]])
    model.opset_imports[MS_DOMAIN] = 1
    model = tidy(model)
    position_ids = model.graph.inputs[[v.name for v in model.graph.inputs].index("position_ids")]
    if position_ids.uses():
        raise MixtralTrtError("GroupQueryAttention lowering: position_ids is still read after the rewrite")
    model.graph.inputs.remove(position_ids)  # positions are the slots now
    return model
