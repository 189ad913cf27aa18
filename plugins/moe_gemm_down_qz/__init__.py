"""MoEGemmDownQZ plugin: MoEGemmDownQ with stored zero points (an asymmetric GPTQ / AWQ / compressed-tensors
checkpoint's codes as stored)."""

from ..moe_gemm_down_q import SPEC as Q
from ..spec import PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEGemmDownQZ",
    folder="moe_gemm_down_qz",
    doc="MoEGemmDownQ whose codes carry one zero point per group, w = (code - zero[group]) * scale[group] "
        "(MoEExpertsQZ / MoEExpertsQZP: an act-order checkpoint's down order is folded into the gate / up rows).",
    inputs=(*Q.inputs,  # inter, routing, weights, codes, scales (block-wise)
            PluginTensor("w2_zeros", ("i32",), "[E, H, ceil(G*bits/32)]",
                         "uint8 zero points packed like the codes along the G = I/quant_block groups, 4 per int32")),
    outputs=Q.outputs,
    fields=(*Q.fields[:3],  # top_k, block_size, bits
            PluginField("quant_block", "int", "inputs per scale and zero point (> 0)")),
)
