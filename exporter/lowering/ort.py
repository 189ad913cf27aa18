"""`ort` lowering: each MoERouter + MoEExperts pair becomes one `com.microsoft::MoE` node.

Semantics measured with onnxruntime 1.32 (ARCHITECTURE.md): `activation_type="swiglu"`,
`swiglu_fusion=1` with fc1 rows interleaved (gate0, up0, gate1, up1, ...), fc1 [E, 2I, H], fc2 [E, H, I],
`normalize_routing_weights=1` (softmax over the top-k), router_probs = the raw router logits, and
activation alpha/beta set explicitly (the CPU kernel's defaults are GPT-OSS's 1.702 / +1).
E experts, I intermediate, H hidden.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from .common import moe_pairs, replace_pair, tidy

MS_DOMAIN = "com.microsoft"
MOE_ATTRIBUTES = {
    "activation_type": "swiglu",
    "swiglu_fusion": 1,
    "normalize_routing_weights": 1,
    "use_sparse_mixer": 0,
    "activation_alpha": 1.0,
    "activation_beta": 0.0,
}


def interleave_gate_up(w13: np.ndarray) -> np.ndarray:
    """[E, 2I, H] with gate rows then up rows -> [E, 2I, H] with rows gate0, up0, gate1, up1, ..."""
    e, two_i, h = w13.shape
    return np.stack((w13[:, : two_i // 2], w13[:, two_i // 2 :]), axis=2).reshape(e, two_i, h)


def _interleaved(w13: ir.TensorProtocol) -> ir.LazyTensor:
    # Lazy: the re-laid-out weights are computed while saving, one layer at a time.
    return ir.LazyTensor(lambda: ir.Tensor(interleave_gate_up(w13.numpy())), dtype=w13.dtype,
                         shape=w13.shape, name=f"{w13.name}.interleaved")


def _interleave_nodes(tape: ir.tape.Tape, w13: ir.Value) -> ir.Value:
    """For expert weights that are graph inputs: [E, 2I, H] -> [E, 2, I, H] -> [E, I, 2, H] -> [E, 2I, H]."""
    shape = tape.op("Shape", [w13])  # [3]
    experts = tape.op("Slice", [shape, _const(tape, [0]), _const(tape, [1])])
    hidden = tape.op("Slice", [shape, _const(tape, [2]), _const(tape, [3])])
    four = tape.op("Reshape", [w13, tape.op("Concat", [experts, _const(tape, [2, -1]), hidden], {"axis": 0})])
    swapped = tape.op("Transpose", [four], {"perm": [0, 2, 1, 3]})
    return tape.op("Reshape", [swapped, shape])


def _const(tape: ir.tape.Tape, values: list[int]) -> ir.Value:
    return tape.op("Constant", [], {"value": ir.tensor(np.array(values, np.int64))})


def lower(model: ir.Model) -> ir.Model:
    graph = model.graph
    for pair in list(moe_pairs(graph)):
        tape = ir.tape.Tape()
        if pair.w13.const_value is not None:
            fc1 = ir.Value(name=f"{pair.w13.name}.interleaved", shape=pair.w13.shape, type=pair.w13.type,
                           const_value=_interleaved(pair.w13.const_value))
            graph.register_initializer(fc1)
        else:
            fc1 = _interleave_nodes(tape, pair.w13)
        node = ir.node("MoE", inputs=[pair.x, pair.router_logits, fc1, None, pair.w2], domain=MS_DOMAIN,
                       attributes={**MOE_ATTRIBUTES, "k": pair.top_k}, name=f"{pair.experts.name}.ort_moe")
        node.outputs[0].shape, node.outputs[0].type = pair.experts.outputs[0].shape, pair.experts.outputs[0].type
        replace_pair(graph, pair, [*tape.nodes, node], node.outputs[0])
    model.opset_imports[MS_DOMAIN] = 1
    return tidy(model)
