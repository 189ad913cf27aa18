"""MoEGemmSwiGLUQZ plugin: MoEGemmSwiGLUQ with stored zero points (an asymmetric GPTQ / AWQ / compressed-tensors
checkpoint's codes as stored) and, for act-order checkpoints, each expert's input order."""

from ..moe_gemm_swiglu_q import SPEC as Q
from ..spec import PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmSwiGLUQZ",
    folder="moe_gemm_swiglu_qz",
    doc="MoEGemmSwiGLUQ whose codes carry one zero point per group, w = (code - zero[group]) * scale[group] "
        "(MoEExpertsQZ); with `ordered` 1 (MoEExpertsQZP, act-order codes) column j of expert e's codes is input "
        "feature order[e, j], and the A tile is gathered in that order while it is loaded.",
    inputs=(*Q.inputs,  # x, routing, codes, scales (block-wise)
            PluginTensor("w13_zeros", ("i32",), "[E, 2I, ceil(G*bits/32)]",
                         "uint8 zero points packed like the codes along the G = H/quant_block groups, 4 per int32"),
            PluginTensor("w13_order", ("i32",), "[E, H] (ordered) or [1, 1]",
                         "each expert's input order of its codes; a placeholder, never read, when ordered = 0")),
    outputs=Q.outputs,
    fields=(*Q.fields[:3],  # top_k, block_size, bits
            PluginField("quant_block", "int", "inputs per scale and zero point (> 0)"),
            PluginField("ordered", "int", "1: gather x in w13_order's order (act-order codes); 0: no order")),
)
