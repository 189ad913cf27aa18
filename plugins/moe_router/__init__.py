"""MoERouter plugin: softmax over the top-k router logits, in float32."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoERouter",
    folder="moe_router",
    doc="Top-k routing: the k largest router logits of each token and their softmax (float32). The same op as "
        "the canonical mixtral::MoERouter, so the canonical node needs only the plugin attributes.",
    inputs=(PluginTensor("router_logits", FLOAT, "[T, E]", "router (gate) logits"),),
    outputs=(PluginTensor("weights", ("fp32",), "[T, k]", "routing weights, summing to 1 per token"),
             PluginTensor("experts", ("i32",), "[T, k]", "expert ids by decreasing logit (lower id on ties)")),
    fields=(PluginField("top_k", "int", "experts per token, 1 <= top_k <= E"),),
)
