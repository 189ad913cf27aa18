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

The linears (`lower_linears_ours`, for the kinds in LINEAR_KINDS a build picks: cpu_kernels_build.py):

    LinearQ     x [..., K], codes uint8 [N, K*bits/8], scales [N, K/B]   a quantized export's mixtral::LinearQ
                (in place of MatMulNBits; the same bytes, the same int8-activation semantics)
    Linear      x [..., K], w float32 [N, K]    a float MatMul(x, Transpose(W)): W read as stored, no transpose
    LinearBF16  the same with W rounded to bf16 at build (`linear_dtype="bf16"`)

A linear outside these forms (zero points, non-constant or per-channel weights, non-float32 x) keeps ONNX
Runtime's MatMul / MatMulNBits. N output features, K input features, B block.
"""

from __future__ import annotations

import onnx_ir as ir

from mixtral_trt.plugins.cpu_kernels import DOMAIN

from ..ops.spec import DOMAIN as MIXTRAL_DOMAIN
from ..ops.spec import LINEAR_Q
from .common import MoEPair, derived_initializer, swap_in

EXPERT_DTYPES = ("fp32", "bf16")
NODE_SUFFIX = ".cpu_moe"  # node names: "{experts node}.cpu_moe" (profile and bench group them as "moe")
LINEAR_SUFFIX = ".cpu_linear"
LINEAR_OPS = ("Linear", "LinearBF16", "LinearQ")
LINEAR_KINDS = ("lm_head", "projections")  # the LM head; the attention projections (every other weight linear)


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


def linear_kind(weight: ir.Value) -> str:
    """"lm_head" for the LM head's weight (tied: the embedding's), "projections" for any other."""
    name = weight.name or ""
    return "lm_head" if "lm_head" in name or "embed" in name else "projections"


def _float_weight(node: ir.Node) -> ir.Value | None:
    """W [N, K] of a float32 MatMul(x, Transpose(W, perm [1, 0])) over a constant W, or None."""
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    x, b = node.inputs
    producer = b.producer() if b is not None else None
    if x is None or x.dtype != ir.DataType.FLOAT or producer is None or producer.op_type != "Transpose":
        return None
    w = producer.inputs[0]
    perm = producer.attributes.get("perm")
    if w is None or w.const_value is None or w.dtype != ir.DataType.FLOAT or len(w.shape) != 2:
        return None
    return w if perm is not None and list(perm.as_ints()) == [1, 0] else None


def _quantized_operands(node: ir.Node) -> tuple[ir.Value, ir.Value, int, int] | None:
    """(codes, scales, bits, block) of a mixtral::LinearQ our LinearQ runs, or None."""
    if node.domain != MIXTRAL_DOMAIN or node.op_type != LINEAR_Q.name or len(node.inputs) != 3:
        return None
    x, codes, scales = node.inputs
    bits, block = node.attributes["bits"].as_int(), node.attributes["block_size"].as_int()
    if x.dtype != ir.DataType.FLOAT or not block or block % 32 or codes.const_value is None:
        return None
    if scales.const_value is None or scales.dtype != ir.DataType.FLOAT or len(scales.shape) != 2:
        return None
    return codes, scales, bits, block


def lower_linears_ours(model: ir.Model, kinds: tuple[str, ...], linear_dtype: str = "fp32") -> list[str]:
    """The linears of `kinds` (LINEAR_KINDS) our ops can run become our nodes, quantized (LinearQ) and float
    (Linear, or LinearBF16 with `linear_dtype` "bf16"); the others are left for ONNX Runtime. Returns the ops
    used, sorted."""
    graph, used = model.graph, set()
    for node in list(graph):
        quantized = _quantized_operands(node)
        weight = quantized[0] if quantized else _float_weight(node)
        if weight is None or linear_kind(weight) not in kinds:
            continue
        x, name = node.inputs[0], node.name + LINEAR_SUFFIX
        if quantized:
            codes, scales, bits, block = quantized
            new = ir.node("LinearQ", [x, codes, scales], {"bits": bits, "block_size": block}, domain=DOMAIN,
                          name=name)
        elif linear_dtype == "bf16" and "embed" not in (weight.name or ""):  # a tied head's weight stays float32
            new = ir.node("LinearBF16", [x, _bf16(graph, weight)], domain=DOMAIN, name=name)
        else:
            new = ir.node("Linear", [x, weight], domain=DOMAIN, name=name)
        swap_in(graph, new, node.outputs[0], [node])
        used.add(new.op_type)
    if used:
        model.opset_imports[DOMAIN] = 1
    return sorted(used)
