"""Ragged attention on our CPU kernels: each layer's attention core becomes one `mixtral.cpu::RaggedAttention`
(plugins/cpu_kernels), for `build --ragged` engines whose other layers run on our library.

The graph after lowering/ragged.py still attends densely: every query scores every cached slot of every packed
row, masked by `attention_visible`, over K / V expanded from G kv heads to N query heads (a copy per layer per
call), so a packed call's cost grows with all rows' slots. The op lists each query's visible slots once and
attends over those only, each kv head read in place by its R query heads. The layer is found as gqa.py finds it
(by the weight names, not the traced ops):

    q       = the output of the projection behind model.layers.{i}.attn.wq.weight        [B, T, N*D], not rotated
    present = outputs present.{i}.key / value (the graph's Concat(past, new), keys rotated)  [B, G, S, D]
    out     = the input of the wo projection                                               [B, T, N*D]

    RaggedAttention(q, present key, present value, attention_visible, position_ids, cos, sin)  -> out

The op rotates the query itself (rotate-half, the reference's cos / sin tables [max_seq, D/2] by position_ids,
gqa.py's rope_initializers), since the rotated query is an interior tensor of the traced graph while q is found by
its weight; the scale is D^-0.5. The graph's inputs and outputs stay exactly as they are (runtime/ragged.py's
feeds; `attention_mask` is still fed, now unread). What is refused keeps the canonical attention:
`refusal` says why, and the build records it (manifest backend_info["ragged_attention"]).
B batch, T new tokens, S key slots, N query heads, G kv heads, D head_dim.
"""

from __future__ import annotations

import onnx_ir as ir

from mixtral_trt.common.contract import ATTENTION_VISIBLE as VISIBLE
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.plugins.cpu_kernels import DOMAIN

from .common import tidy
from .gqa import projection, rope_initializers, splice_attention

OP = "RaggedAttention"
CANONICAL = "canonical"  # backend_info["ragged_attention"] where the op is not used


def refusal(kv_cache: str, ours: bool) -> str | None:
    """Why a `--ragged` build keeps the canonical attention instead of the op, or None."""
    if not ours:
        return "ONNX Runtime's kernels (--cpu-kernels ort)"
    if kv_cache != "float":
        return f"a {kv_cache} KV cache: {OP} reads float32 caches"
    return None


def attention_form(kv_cache: str, ours: bool) -> str:
    """What a `--ragged` engine's manifest records: the op's name, or the canonical graph and why."""
    why = refusal(kv_cache, ours)
    return OP if why is None else f"{CANONICAL} ({why})"


def lower_ragged_attention(model: ir.Model, contract: GraphContract) -> ir.Model:
    """Every layer's attention core as one RaggedAttention node (see the module docstring); the graph must take
    `attention_visible` already (lowering/ragged.py's expose_visibility)."""
    graph, cfg = model.graph, contract.config
    inputs = {v.name: v for v in graph.inputs}
    outputs = {v.name: v for v in graph.outputs}
    if VISIBLE not in inputs or "position_ids" not in inputs:
        raise MixtralTrtError(f"{OP} lowering: the graph takes no {VISIBLE} / position_ids (expose the visibility "
                              "first)")
    cos, sin = rope_initializers(graph, contract)
    attributes = {"num_heads": cfg.num_heads, "kv_num_heads": cfg.num_kv_heads}
    for i in range(cfg.num_layers):
        q = projection(graph, i, "wq").outputs[0]
        key, value = outputs[f"present.{i}.key"], outputs[f"present.{i}.value"]
        wrong = [str(v.name) for v in (q, key, value) if v.dtype != ir.DataType.FLOAT]
        if wrong:
            raise MixtralTrtError(f"{OP} lowering: layer {i}'s {', '.join(wrong)} are not float32")
        node = ir.node(OP, [q, key, value, inputs[VISIBLE], inputs["position_ids"], cos, sin], attributes,
                       domain=DOMAIN, name=f"layers.{i}.attn.ragged")
        splice_attention(graph, i, node)
    model.opset_imports[DOMAIN] = 1
    return tidy(model)
