"""MoEGemmDownF8 plugin: MoEGemmDown with FP8 e4m3 expert weights (a compressed-tensors float-quantized
checkpoint's), decoded exactly in registers."""

from ..moe_gemm_down_q import SPEC as Q
from ..spec import PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmDownF8",
    folder="moe_gemm_down_f8",
    doc="MoEGemmDown whose w2 is FP8 e4m3fn bytes with one scale per output row, decoded tile by tile in "
        "registers (MoEGemmSwiGLUF8's decoding).",
    inputs=(*Q.inputs[:5],  # inter, sorted_pairs, block_experts, num_padded, weights
            PluginTensor("w2_codes", ("i32",), "[E, H, I/4]", "down rows: e4m3fn bytes, 4 per int32"),
            PluginTensor("w2_scales", ("like:inter",), "[E, H]", "scale of each output row")),
    outputs=Q.outputs,
    fields=Q.fields[:2],  # top_k, block_size
)
