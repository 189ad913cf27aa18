"""MoEGemmSwiGLUQZ plugin: MoEGemmSwiGLUQ with stored zero points (an asymmetric GPTQ / AWQ / compressed-tensors
checkpoint's codes as stored) and, for act-order checkpoints, each expert's input order."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmSwiGLUQZ",
    folder="moe_gemm_swiglu_qz",
    doc="MoEGemmSwiGLUQ whose codes carry one zero point per group, w = (code - zero[group]) * scale[group] "
        "(MoEExpertsQZ); with `ordered` 1 (MoEExpertsQZP, act-order codes) column j of expert e's codes is input "
        "feature order[e, j], and the A tile is gathered in that order while it is loaded.",
    inputs=(PluginTensor("x", FLOAT, "[T, H]", "token activations"),
            PluginTensor("sorted_pairs", ("i32",), "[M_max]", "from MoEAlign"),
            PluginTensor("block_experts", ("i32",), "[M_max / block]", "from MoEAlign"),
            PluginTensor("num_padded", ("i32",), "[1]", "from MoEAlign"),
            PluginTensor("w13_codes", ("i32",), "[E, 2I, H*bits/32]",
                         "gate rows [0, I), up rows [I, 2I): uint8 codes, 4 per int32"),
            PluginTensor("w13_scales", ("like:x",), "[E, 2I, H/quant_block]", "scales"),
            PluginTensor("w13_zeros", ("i32",), "[E, 2I, ceil(G*bits/32)]",
                         "uint8 zero points packed like the codes along the G = H/quant_block groups, 4 per int32"),
            PluginTensor("w13_order", ("i32",), "[E, H] (ordered) or [1, 1]",
                         "each expert's input order of its codes; a placeholder, never read, when ordered = 0")),
    outputs=(PluginTensor("inter", ("like:x",), "[M_max, I]", "activations of the routed rows"),),
    fields=(PluginField("top_k", "int", "k"), PluginField("block_size", "int", "MoEAlign's block_size"),
            PluginField("bits", "int", "8 or 4"),
            PluginField("quant_block", "int", "inputs per scale and zero point (> 0)"),
            PluginField("ordered", "int", "1: gather x in w13_order's order (act-order codes); 0: no order")),
)
