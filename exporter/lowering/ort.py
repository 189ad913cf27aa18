"""`ort` lowering: each MoERouter + MoEExperts pair becomes one `com.microsoft::MoE` node, or one MatMul
pair per expert (ort_experts.py: the faster form on the CPU EP; `expert_form` chooses).

Semantics measured with onnxruntime 1.32 (docs/ARCHITECTURE.md): `activation_type="swiglu"`,
`swiglu_fusion=1` with fc1 rows interleaved (gate0, up0, gate1, up1, ...), fc1 [E, 2I, H], fc2 [E, H, I],
`normalize_routing_weights=1` (softmax over the top-k), router_probs = the raw router logits, and
activation alpha/beta and `swiglu_limit` set explicitly: kernels default them to GPT-OSS's 1.702 / +1 and, in
one CUDA build (contrib_ops/cuda/moe/moe_base.h), a 7.0 clamp on the gate and up activations that real Mixtral
activations exceed while tiny test models never reach it. +inf clamps nothing in every build (the builds where
a non-positive limit means "no clamp" included). What the CUDA EP accepts of QMoE: ort_cuda.py.
Quantized experts become QMoE and quantized linears MatMulNBits (ort_quant.py); float experts are split for
the CPU kernel's threads (ort_split.py); RMSNorm chains are fused (ort_fuse.py). E experts, I intermediate, H hidden.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError

from .common import derived_initializer, int64_const, moe_pairs, replace_pair, tidy
from .ort_cpu_kernels import cpu_moe_node, lower_linears_ours, unsupported
from .ort_experts import lower_experts
from .ort_fuse import fuse_rms_norms
from .ort_quant import lower_linears, qmoe_attributes
from .ort_split import parts_for, split_w2, split_w13

MS_DOMAIN = "com.microsoft"
# float experts split in this many virtual experts along I (ort_split.py), so the CPU kernel's threads read
# the same bytes whatever the routing; 1 = the checkpoint's experts as they are
EXPERT_PARTS = 2
MOE_ATTRIBUTES = {
    "activation_type": "swiglu",
    "swiglu_fusion": 1,
    "normalize_routing_weights": 1,
    "use_sparse_mixer": 0,
    "activation_alpha": 1.0,
    "activation_beta": 0.0,
    "swiglu_limit": float("inf"),
}


def interleave_gate_up(w13: np.ndarray) -> np.ndarray:
    """[E, 2I, ...] with gate rows then up rows -> rows gate0, up0, gate1, up1, ... (weights, codes, scales)."""
    half = w13.shape[1] // 2
    return np.stack((w13[:, :half], w13[:, half:]), axis=2).reshape(w13.shape)


def _interleaved_initializer(graph: ir.Graph, value: ir.Value) -> ir.Value:
    """A new initializer with the rows of `value` interleaved, computed lazily while saving."""
    tensor = value.const_value
    lazy = ir.LazyTensor(lambda: ir.Tensor(interleave_gate_up(tensor.numpy())), dtype=tensor.dtype,
                         shape=tensor.shape, name=f"{value.name}.interleaved")
    new = ir.Value(name=f"{value.name}.interleaved", shape=value.shape, type=value.type, const_value=lazy)
    graph.register_initializer(new)
    return new


def _interleave_nodes(tape: ir.tape.Tape, w13: ir.Value) -> ir.Value:
    """For expert weights that are graph inputs: [E, 2I, H] -> [E, 2, I, H] -> [E, I, 2, H] -> [E, 2I, H]."""
    shape = tape.op("Shape", [w13])  # [3]
    experts = tape.op("Slice", [shape, int64_const(tape, [0]), int64_const(tape, [1])])
    hidden = tape.op("Slice", [shape, int64_const(tape, [2]), int64_const(tape, [3])])
    four = tape.op("Reshape", [w13, tape.op("Concat", [experts, int64_const(tape, [2, -1]), hidden], {"axis": 0})])
    swapped = tape.op("Transpose", [four], {"perm": [0, 2, 1, 3]})
    return tape.op("Reshape", [swapped, shape])


def _qmoe(graph: ir.Graph, pair) -> ir.Node:
    """com.microsoft::QMoE over the quantized experts: raw [E, N, K*bits/8] codes (weights_prepacked=0),
    fc1 codes and scales with interleaved gate/up rows, the implicit zero point 2^(bits-1) or (MoEExpertsQZ)
    the stored packed zero points (fc1's interleaved too), QMoE inputs 11 and 12."""
    bits, block_size = pair.quant
    fc1 = _interleaved_initializer(graph, pair.w13)
    fc1_scales = _interleaved_initializer(graph, pair.w13_scales)
    attributes = {**MOE_ATTRIBUTES, "k": pair.top_k, **qmoe_attributes(bits, block_size)}
    inputs = [pair.x, pair.router_logits, fc1, fc1_scales, None, pair.w2, pair.w2_scales]
    if pair.w13_zeros is not None:
        inputs += [None, None, None, None, _interleaved_initializer(graph, pair.w13_zeros), pair.w2_zeros]
    return ir.node("QMoE", inputs=inputs, domain=MS_DOMAIN, attributes=attributes,
                   name=f"{pair.experts.name}.ort_qmoe")


def _split_moe(graph: ir.Graph, tape: ir.tape.Tape, pair, parts: int) -> ir.Node:
    """Float MoE with every expert split into `parts` virtual experts (ort_split.py: balanced threads)."""
    e, two_i, h = (int(d) for d in pair.w13.shape)
    parts = parts_for(two_i // 2, parts)
    fc1 = derived_initializer(graph, pair.w13, lambda a: interleave_gate_up(split_w13(a, parts)),
                              (parts * e, two_i // parts, h), f"split{parts}.interleaved")
    fc2 = derived_initializer(graph, pair.w2, lambda a: split_w2(a, parts), (parts * e, h, two_i // 2 // parts),
                              f"split{parts}")
    logits = tape.op("Concat", [pair.router_logits] * parts, {"axis": 1}) if parts > 1 else pair.router_logits
    return ir.node("MoE", inputs=[pair.x, logits, fc1, None, fc2], domain=MS_DOMAIN,
                   attributes={**MOE_ATTRIBUTES, "k": pair.top_k * parts}, name=f"{pair.experts.name}.ort_moe")


EXPERT_FORMS = ("matmul", "moe")  # per-expert MatMuls (ort_experts.py: CPU) | com.microsoft::MoE / QMoE (CUDA)


def expert_form(contract: GraphContract, provider: str, requested: str | None = None) -> str:
    """How the `ort` lowering runs the experts of `contract`'s export: `requested`, or per-expert MatMuls for
    float fp32 experts in engines built for the CPU (ONNX Runtime's CPU MoE kernel repacks float experts on every
    call: ort_experts.py) and the MoE / QMoE ops for the rest: fp16 / bf16 engines are the CUDA EP's, whose fused
    kernels are the fast form, and the CPU QMoE runs block-wise experts as prepacked QNBit GEMMs already (its
    per-expert MatMulNBits form measured slower: docs/ARCHITECTURE.md); per-channel experts have no MatMulNBits
    layout at all. Act-order experts (MoEExpertsQZP) run per expert only: QMoE takes no per-expert input order."""
    spec = contract.extra.get("quantization") or {}
    if requested is None:
        if spec.get("input_order"):
            return "matmul"
        return "matmul" if contract.dtype == "fp32" and provider == "cpu" and not spec else "moe"
    if requested not in EXPERT_FORMS:
        raise MixtralTrtError(f"--experts {requested!r}: choose one of {', '.join(EXPERT_FORMS)}")
    if requested == "moe" and spec.get("input_order"):
        raise MixtralTrtError("--experts moe: act-order experts (each expert's own input order) have no QMoE form "
                              "(it takes no per-expert input permutation); build with --experts matmul")
    if requested == "matmul" and spec and not spec.get("block_size"):
        raise MixtralTrtError("--experts matmul: per-channel quantized experts (--quant-block 0) run as QMoE only; "
                              "export with a block size or build with --experts moe")
    return requested


def lower(model: ir.Model, experts: str = "moe", expert_parts: int = EXPERT_PARTS, cpu_kernels: str = "ort",
          expert_dtype: str = "fp32", cpu_linears: tuple[str, ...] = (), linear_dtype: str = "fp32") -> ir.Model:
    """`experts`: one of EXPERT_FORMS (expert_form chooses it for a build). `cpu_kernels="ours"`: every pair our
    library's ops can run becomes one of its nodes (ort_cpu_kernels.py; `expert_dtype` "bf16" stores float experts
    in bf16), the others take the `experts` form; so do the linears of the kinds in `cpu_linears` (LM head,
    attention projections; `linear_dtype` "bf16" stores float ones in bf16), the rest MatMul / MatMulNBits."""
    graph = model.graph
    for pair in list(moe_pairs(graph)):
        tape = ir.tape.Tape()
        if cpu_kernels == "ours" and unsupported(pair) is None:
            node = cpu_moe_node(graph, pair, expert_dtype)
            out, new_nodes = node.outputs[0], [node]
            model.opset_imports[node.domain] = 1
        elif experts == "matmul" or pair.w13_order is not None:  # QMoE takes no per-expert input order
            out = lower_experts(graph, tape, pair)
            new_nodes = list(tape.nodes)
        else:
            if pair.quant:
                node = _qmoe(graph, pair)
            elif pair.w13.const_value is not None and pair.w2.const_value is not None and expert_parts > 1:
                node = _split_moe(graph, tape, pair, expert_parts)
            else:
                if pair.w13.const_value is not None:
                    fc1 = _interleaved_initializer(graph, pair.w13)
                else:
                    fc1 = _interleave_nodes(tape, pair.w13)
                node = ir.node("MoE", inputs=[pair.x, pair.router_logits, fc1, None, pair.w2], domain=MS_DOMAIN,
                               attributes={**MOE_ATTRIBUTES, "k": pair.top_k}, name=f"{pair.experts.name}.ort_moe")
            out, new_nodes = node.outputs[0], [*tape.nodes, node]
        out.shape, out.type = pair.experts.outputs[0].shape, pair.experts.outputs[0].type
        replace_pair(graph, pair, new_nodes, out)
    if cpu_kernels == "ours" and cpu_linears:
        lower_linears_ours(model, cpu_linears, linear_dtype)
    lower_linears(model)  # (the remaining) quantized attention projections and LM head -> MatMulNBits
    fuse_rms_norms(model)  # each RMSNorm chain -> SimplifiedLayerNormalization
    model.opset_imports[MS_DOMAIN] = 1
    return tidy(model)
