"""MoEGemmDown plugin: grouped GEMM of the SwiGLU rows with each expert's down projection, scaled by the
routing weight and written to the row of its (token, slot) pair."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmDown",
    folder="moe_gemm_down",
    doc="For each row r with a real pair p = sorted_pairs[r]: y[p] = weights[p] * (W2[e] inter[r]) in float32. "
        "Every pair is written exactly once (no atomics); the k-way combine is the sum of the k rows of each "
        "token, a ReduceSum node after the plugin.",
    inputs=(PluginTensor("inter", FLOAT, "[M_max, I]", "from MoEGemmSwiGLU"),
            PluginTensor("sorted_pairs", ("i32",), "[M_max]", "from MoEAlign"),
            PluginTensor("block_experts", ("i32",), "[M_max / block]", "from MoEAlign"),
            PluginTensor("num_padded", ("i32",), "[1]", "from MoEAlign"),
            PluginTensor("weights", ("fp32",), "[T, k]", "routing weights from MoERouter"),
            PluginTensor("w2", ("like:inter",), "[E, H, I]", "down projections")),
    outputs=(PluginTensor("y_pairs", ("fp32",), "[T*k, H]", "weighted expert outputs, one row per pair"),),
    fields=(PluginField("top_k", "int", "k"), PluginField("block_size", "int", "MoEAlign's block_size")),
)
