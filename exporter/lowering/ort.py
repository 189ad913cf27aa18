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

from .common import const_tensor, moe_pairs, replace_pair, tidy

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


def lower(model: ir.Model) -> ir.Model:
    graph = model.graph
    for pair in list(moe_pairs(graph)):
        w13 = const_tensor(pair.w13, "MoEExperts w13")
        fc1 = ir.Value(name=f"{pair.w13.name}.interleaved", shape=pair.w13.shape, type=pair.w13.type,
                       const_value=_interleaved(w13))
        graph.register_initializer(fc1)
        node = ir.node("MoE", inputs=[pair.x, pair.router_logits, fc1, None, pair.w2], domain=MS_DOMAIN,
                       attributes={**MOE_ATTRIBUTES, "k": pair.top_k}, name=f"{pair.experts.name}.ort_moe")
        node.outputs[0].shape, node.outputs[0].type = pair.experts.outputs[0].shape, pair.experts.outputs[0].type
        replace_pair(graph, pair, [node], node.outputs[0])
    model.opset_imports[MS_DOMAIN] = 1
    return tidy(model)
