"""MoEGemmSwiGLUF8 plugin: MoEGemmSwiGLU with FP8 e4m3 expert weights (a compressed-tensors float-quantized
checkpoint's), decoded exactly in registers."""

from ..moe_gemm_swiglu_q import SPEC as Q
from ..spec import PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmSwiGLUF8",
    folder="moe_gemm_swiglu_f8",
    doc="MoEGemmSwiGLU whose w13 is FP8 e4m3fn bytes with one scale per output row (a per-tensor scale broadcast "
        "to its rows): each weight tile is decoded from its bits with integer ops, w = e4m3 * scale[row], before "
        "the dot. Weights are read at half the bytes of fp16 ones.",
    inputs=(*Q.inputs[:4],  # x, sorted_pairs, block_experts, num_padded
            PluginTensor("w13_codes", ("i32",), "[E, 2I, H/4]",
                         "gate rows [0, I), up rows [I, 2I): e4m3fn bytes, 4 per int32"),
            PluginTensor("w13_scales", ("like:x",), "[E, 2I]", "scale of each output row")),
    outputs=Q.outputs,
    fields=Q.fields[:2],  # top_k, block_size
)
