"""MoEGemmSwiGLUQ plugin: MoEGemmSwiGLU with weight-only int8 / int4 expert weights, dequantized on the fly."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmSwiGLUQ",
    folder="moe_gemm_swiglu_q",
    doc="MoEGemmSwiGLU whose w13 is quantized (ONNX Runtime QMoE's format): each weight tile is dequantized in "
        "registers, w = (code - 2^(bits-1)) * scale, before the dot. Codes are read at bits/16 of the bytes "
        "of fp16 weights: the point of int8 / int4 for weight-bandwidth-bound decode.",
    inputs=(PluginTensor("x", FLOAT, "[T, H]", "token activations"),
            PluginTensor("sorted_pairs", ("i32",), "[M_max]", "from MoEAlign"),
            PluginTensor("block_experts", ("i32",), "[M_max / block]", "from MoEAlign"),
            PluginTensor("num_padded", ("i32",), "[1]", "from MoEAlign"),
            PluginTensor("w13_codes", ("i32",), "[E, 2I, H*bits/32]",
                         "gate rows [0, I), up rows [I, 2I): uint8 codes, 4 per int32"),
            PluginTensor("w13_scales", ("like:x",), "[E, 2I] or [E, 2I, H/quant_block]", "scales")),
    outputs=(PluginTensor("inter", ("like:x",), "[M_max, I]", "activations of the routed rows"),),
    fields=(PluginField("top_k", "int", "k"), PluginField("block_size", "int", "MoEAlign's block_size"),
            PluginField("bits", "int", "8 or 4"),
            PluginField("quant_block", "int", "inputs per scale; 0 = one scale per output row")),
)
