"""The `ort` lowering with our CPU kernels (`build --cpu-kernels ours`): each MoERouter + MoEExperts pair becomes
one node of plugins/cpu_kernels' library (domain `mixtral.cpu`), which ONNX Runtime runs once the library is
registered in the session (runtime/backends/ort.py). The node takes the router logits, not the routing: top-k,
softmax, grouping, both matmuls and the weighted sum happen inside it.

    MoE      x [T, H], router_logits [T, E], w13 [E, 2I, H], w2 [E, H, I]              float32 experts
    MoEBF16  the same with w13 / w2 in bf16 (`expert_dtype="bf16"`: fp32 exports' experts rounded at build)
    MoEQ     uint8 codes + float32 block scales (common/quant.py), attributes bits, block_size

A pair the library cannot take (non-constant weights, activations other than float32, per-channel scales or a
block that is not a multiple of 32) stays with ONNX Runtime's kernels: `unsupported` says why, and the build
records which layers use which. T tokens, H hidden, I intermediate, E experts.
"""

from __future__ import annotations

import onnx_ir as ir

from mixtral_trt.plugins.cpu_kernels import DOMAIN

from .common import MoEPair, derived_initializer

EXPERT_DTYPES = ("fp32", "bf16")
NODE_SUFFIX = ".cpu_moe"  # node names: "{experts node}.cpu_moe" (profile and bench group them as "moe")


def unsupported(pair: MoEPair) -> str | None:
    """Why the library's ops cannot run this pair, or None."""
    if pair.x.dtype != ir.DataType.FLOAT:
        return f"activations are {pair.x.dtype}, the ops take float32"
    if pair.w13.const_value is None or pair.w2.const_value is None:
        return "expert weights are not constant initializers"
    if pair.w13_order is not None:  # an act-order checkpoint's codes (MoEExpertsQZP)
        return "act-order experts: the ops take no per-expert input order"
    if pair.w13_zeros is not None:  # a quantized checkpoint's asymmetric codes (MoEExpertsQZ)
        return "zero points: the ops take symmetric block-wise codes"
    if pair.quant is not None:
        bits, block = pair.quant
        if not block or block % 32:
            return f"block size {block}: the ops take block-wise scales in blocks that are multiples of 32"
        if pair.w13_scales.const_value is None or pair.w13_scales.dtype != ir.DataType.FLOAT:
            return "scales are not float32 constant initializers"
    return None


def _bf16(graph: ir.Graph, value: ir.Value) -> ir.Value:
    import ml_dtypes

    shape = tuple(int(d) for d in value.shape)
    return derived_initializer(graph, value, lambda a: a.astype(ml_dtypes.bfloat16), shape, "bf16",
                               ir.DataType.BFLOAT16)


def cpu_moe_node(graph: ir.Graph, pair: MoEPair, expert_dtype: str = "fp32") -> ir.Node:
    """The library's node for one pair (check `unsupported` first)."""
    attributes = {"k": pair.top_k}
    name = pair.experts.name + NODE_SUFFIX
    if pair.quant is not None:
        bits, block = pair.quant
        inputs = [pair.x, pair.router_logits, pair.w13, pair.w2, pair.w13_scales, pair.w2_scales]
        return ir.node("MoEQ", inputs, {**attributes, "bits": bits, "block_size": block}, domain=DOMAIN, name=name)
    if expert_dtype == "bf16":
        inputs = [pair.x, pair.router_logits, _bf16(graph, pair.w13), _bf16(graph, pair.w2)]
        return ir.node("MoEBF16", inputs, attributes, domain=DOMAIN, name=name)
    return ir.node("MoE", [pair.x, pair.router_logits, pair.w13, pair.w2], attributes, domain=DOMAIN, name=name)
