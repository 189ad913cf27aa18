"""MoEGemmDownQ plugin: MoEGemmDown with weight-only int8 / int4 expert weights, dequantized on the fly."""

from ..spec import FLOAT, PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmDownQ",
    folder="moe_gemm_down_q",
    doc="MoEGemmDown whose w2 is quantized (ONNX Runtime QMoE's format), dequantized tile by tile in registers.",
    inputs=(PluginTensor("inter", FLOAT, "[M_max, I]", "from MoEGemmSwiGLUQ"),
            PluginTensor("sorted_pairs", ("i32",), "[M_max]", "from MoEAlign"),
            PluginTensor("block_experts", ("i32",), "[M_max / block]", "from MoEAlign"),
            PluginTensor("num_padded", ("i32",), "[1]", "from MoEAlign"),
            PluginTensor("weights", ("fp32",), "[T, k]", "routing weights from MoERouter"),
            PluginTensor("w2_codes", ("i32",), "[E, H, I*bits/32]", "down rows: uint8 codes, 4 per int32"),
            PluginTensor("w2_scales", ("like:inter",), "[E, H] or [E, H, I/quant_block]", "scales")),
    outputs=(PluginTensor("y_pairs", ("fp32",), "[T*k, H]", "weighted expert outputs, one row per pair"),),
    fields=(PluginField("top_k", "int", "k"), PluginField("block_size", "int", "MoEAlign's block_size"),
            PluginField("bits", "int", "8 or 4"),
            PluginField("quant_block", "int", "inputs per scale; 0 = one scale per output row")),
)
