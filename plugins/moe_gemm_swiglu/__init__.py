"""MoEGemmSwiGLU plugin: grouped GEMM of the gathered token rows with each expert's gate and up
projections, SwiGLU fused."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmSwiGLU",
    folder="moe_gemm_swiglu",
    doc="For each row r < num_padded with a real pair p = sorted_pairs[r]: inter[r] = silu(W1[e] x[p // k]) * "
        "(W3[e] x[p // k]), e = the expert of r's block; float32 accumulation. Padding rows are not written.",
    inputs=(PluginTensor("x", FLOAT, "[T, H]", "token activations"),
            PluginTensor("sorted_pairs", ("i32",), "[M_max]", "from MoEAlign"),
            PluginTensor("block_experts", ("i32",), "[M_max / block]", "from MoEAlign"),
            PluginTensor("num_padded", ("i32",), "[1]", "from MoEAlign"),
            PluginTensor("w13", ("like:x",), "[E, 2I, H]", "gate rows [0, I), up rows [I, 2I)")),
    outputs=(PluginTensor("inter", ("like:x",), "[M_max, I]", "activations of the routed rows"),),
    fields=(PluginField("top_k", "int", "k (a pair id p belongs to token p // k)"),
            PluginField("block_size", "int", "MoEAlign's block_size")),
)
