"""MoEGemmDownQZ plugin: MoEGemmDownQ with stored zero points (an asymmetric GPTQ / AWQ / compressed-tensors
checkpoint's codes as stored)."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmDownQZ",
    folder="moe_gemm_down_qz",
    doc="MoEGemmDownQ whose codes carry one zero point per group, w = (code - zero[group]) * scale[group] "
        "(MoEExpertsQZ / MoEExpertsQZP: an act-order checkpoint's down order is folded into the gate / up rows).",
    inputs=(PluginTensor("inter", FLOAT, "[M_max, I]", "from MoEGemmSwiGLUQZ"),
            PluginTensor("sorted_pairs", ("i32",), "[M_max]", "from MoEAlign"),
            PluginTensor("block_experts", ("i32",), "[M_max / block]", "from MoEAlign"),
            PluginTensor("num_padded", ("i32",), "[1]", "from MoEAlign"),
            PluginTensor("weights", ("fp32",), "[T, k]", "routing weights from MoERouter"),
            PluginTensor("w2_codes", ("i32",), "[E, H, I*bits/32]", "down rows: uint8 codes, 4 per int32"),
            PluginTensor("w2_scales", ("like:inter",), "[E, H, I/quant_block]", "scales"),
            PluginTensor("w2_zeros", ("i32",), "[E, H, ceil(G*bits/32)]",
                         "uint8 zero points packed like the codes along the G = I/quant_block groups, 4 per int32")),
    outputs=(PluginTensor("y_pairs", ("fp32",), "[T*k, H]", "weighted expert outputs, one row per pair"),),
    fields=(PluginField("top_k", "int", "k"), PluginField("block_size", "int", "MoEAlign's block_size"),
            PluginField("bits", "int", "8 or 4"),
            PluginField("quant_block", "int", "inputs per scale and zero point (> 0)")),
)
