"""MoEAlign plugin: group the (token, slot) pairs by expert and pad each group to the GEMM block."""

from ..spec import PluginField, PluginSpec, PluginTensor

SPEC = PluginSpec(
    name="MoEAlign",
    folder="moe_align",
    doc="Sorts the T*k (token, slot) pairs by expert (stable) and pads each expert's run to a multiple of "
        "block_size with the sentinel T*k, so every GEMM block holds one expert. Output sizes depend only on "
        "T: M_max = T*k + E*(block_size - 1) rows, ceil(M_max / block_size) blocks.",
    inputs=(PluginTensor("experts", ("i32",), "[T, k]", "expert ids from MoERouter"),),
    outputs=(PluginTensor("sorted_pairs", ("i32",), "[M_max]", "pair id p = t*k + j, or T*k for padding"),
             PluginTensor("block_experts", ("i32",), "[ceil(M_max / block_size)]",
                          "expert of each block, -1 for blocks past the padded total"),
             PluginTensor("num_padded", ("i32",), "[1]", "rows in use (sum of padded expert runs)")),
    fields=(PluginField("num_experts", "int", "E (sizes the outputs)"),
            PluginField("block_size", "int", "padding granularity = the largest GEMM BLOCK_M (power of 2)")),
)
