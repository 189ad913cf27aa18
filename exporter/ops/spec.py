"""One declarative spec per custom op: the single source for the ONNX schema, the function body's
signature, the torch translation and the plugin attributes.

T tokens, E experts, k experts per token, H hidden, I intermediate.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "mixtral"
OPSET_VERSION = 1
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)")


@dataclass(frozen=True)
class Tensor:
    name: str
    type: str  # a type-constraint letter ("T") or a fixed ONNX type ("tensor(int32)")
    shape: str  # for documentation: "[T, E]"
    doc: str


@dataclass(frozen=True)
class Attr:
    name: str
    type: str  # "int" | "float" | "string"
    doc: str
    default: int | float | str | None = None  # None: required


@dataclass(frozen=True)
class OpSpec:
    name: str
    doc: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    attributes: tuple[Attr, ...] = ()
    type_constraints: tuple[tuple[str, tuple[str, ...]], ...] = (("T", FLOAT_TYPES),)
    domain: str = DOMAIN
    version: int = OPSET_VERSION

    @property
    def qualified_name(self) -> str:
        return f"{self.domain}::{self.name}"


MOE_ROUTER = OpSpec(
    name="MoERouter",
    doc="Top-k routing: the k largest router logits per token and their softmax, computed in float32 "
    "(equal to softmax over all experts, top-k, renormalise).",
    inputs=(Tensor("router_logits", "T", "[T, E]", "router (gate) logits"),),
    outputs=(
        Tensor("weights", "tensor(float)", "[T, k]", "routing weights, summing to 1 per token"),
        Tensor("experts", "tensor(int32)", "[T, k]", "chosen expert ids, by decreasing logit"),
    ),
    attributes=(Attr("top_k", "int", "experts per token (1 <= top_k <= E)"),),
)

MOE_EXPERTS = OpSpec(
    name="MoEExperts",
    doc="SwiGLU experts: y[t] = sum_j weights[t,j] * W2[e] (silu(W1[e] x[t]) * W3[e] x[t]), e = experts[t,j]. "
    "w13 stacks W1 (rows [0, I)) over W3 (rows [I, 2I)).",
    inputs=(
        Tensor("x", "T", "[T, H]", "token activations"),
        Tensor("experts", "tensor(int32)", "[T, k]", "expert ids from MoERouter"),
        Tensor("weights", "tensor(float)", "[T, k]", "routing weights from MoERouter"),
        Tensor("w13", "T", "[E, 2I, H]", "gate and up projections, torch Linear [out, in] layout"),
        Tensor("w2", "T", "[E, H, I]", "down projections, torch Linear [out, in] layout"),
    ),
    outputs=(Tensor("y", "T", "[T, H]", "combined expert outputs"),),
)

# the weight-only integer format of MoEExpertsQ and LinearQ (common/quant.py)
QUANT_ATTRIBUTES = (Attr("bits", "int", "bits per weight: 8 or 4"),
                    Attr("block_size", "int", "inputs per scale; 0 = one scale per output row"))

MOE_EXPERTS_Q = OpSpec(
    name="MoEExpertsQ",
    doc="MoEExperts with weight-only integer-quantized expert weights (ONNX Runtime QMoE's format): codes "
    "uint8 packed along the input features (two 4-bit codes per byte, even element in the low nibble), zero "
    "point 2^(bits-1), one scale per output row (block_size 0) or per block_size inputs. The weights are "
    "dequantized, then the experts run as in MoEExperts.",
    inputs=(
        Tensor("x", "T", "[T, H]", "token activations"),
        Tensor("experts", "tensor(int32)", "[T, k]", "expert ids from MoERouter"),
        Tensor("weights", "tensor(float)", "[T, k]", "routing weights from MoERouter"),
        Tensor("w13_codes", "tensor(uint8)", "[E, 2I, H*bits/8]", "gate and up rows, quantized"),
        Tensor("w13_scales", "T", "[E, 2I] or [E, 2I, H/block_size]", "their scales"),
        Tensor("w2_codes", "tensor(uint8)", "[E, H, I*bits/8]", "down rows, quantized"),
        Tensor("w2_scales", "T", "[E, H] or [E, H, I/block_size]", "their scales"),
    ),
    outputs=(Tensor("y", "T", "[T, H]", "combined expert outputs"),),
    attributes=QUANT_ATTRIBUTES,
)

LINEAR_Q = OpSpec(
    name="LinearQ",
    doc="y = x W^T with a weight-only integer-quantized W [N, K] (torch Linear layout), in MoEExpertsQ's format: "
    "codes uint8 packed along K, zero point 2^(bits-1), one scale per block_size inputs (or per row: block_size "
    "0). Written by export --quantize for the attention projections and the LM head.",
    inputs=(
        Tensor("x", "T", "[..., K]", "activations"),
        Tensor("codes", "tensor(uint8)", "[N, K*bits/8]", "the weight, quantized"),
        Tensor("scales", "T", "[N] or [N, K/block_size]", "its scales"),
    ),
    outputs=(Tensor("y", "T", "[..., N]", "x W^T"),),
    attributes=QUANT_ATTRIBUTES,
)

# with zero points: an asymmetric quantized checkpoint's codes as stored (block-wise only)
_ZEROS_DOC = "zero points, uint8 packed like the codes along the groups (common/quant.py)"
MOE_EXPERTS_QZ = OpSpec(
    name="MoEExpertsQZ",
    doc="MoEExpertsQ with one zero point per block (w = (code - zero) * scale) instead of 2^(bits-1); "
    "block_size > 0. Written for asymmetric GPTQ / AWQ / compressed-tensors checkpoints exported as stored.",
    inputs=(*MOE_EXPERTS_Q.inputs,
            Tensor("w13_zeros", "tensor(uint8)", "[E, 2I, ceil(H/block_size*bits/8)]", _ZEROS_DOC),
            Tensor("w2_zeros", "tensor(uint8)", "[E, H, ceil(I/block_size*bits/8)]", _ZEROS_DOC)),
    outputs=MOE_EXPERTS_Q.outputs,
    attributes=QUANT_ATTRIBUTES,
)

MOE_EXPERTS_QZP = OpSpec(
    name="MoEExpertsQZP",
    doc="MoEExpertsQZ whose gate / up codes take each expert's inputs in its own order: column j of expert e's "
    "w13 codes is input feature w13_order[e, j] (an act-order checkpoint's input channels sorted by group, so "
    "its groups are contiguous blocks). The down rows need no order: their input order is folded into the gate / "
    "up rows at export. Written for act-order (desc_act / actorder group) checkpoints exported as stored.",
    inputs=(*MOE_EXPERTS_QZ.inputs,
            Tensor("w13_order", "tensor(int64)", "[E, H]", "each expert's permutation of the input features")),
    outputs=MOE_EXPERTS_Q.outputs,
    attributes=QUANT_ATTRIBUTES,
)

LINEAR_QZ = OpSpec(
    name="LinearQZ",
    doc="LinearQ with one zero point per block (w = (code - zero) * scale); block_size > 0.",
    inputs=(*LINEAR_Q.inputs, Tensor("zeros", "tensor(uint8)", "[N, ceil(K/block_size*bits/8)]", _ZEROS_DOC)),
    outputs=LINEAR_Q.outputs,
    attributes=QUANT_ATTRIBUTES,
)

MOE_EXPERTS_F8 = OpSpec(
    name="MoEExpertsF8",
    doc="MoEExperts with FP8 e4m3fn expert weights (a compressed-tensors float-quantized checkpoint's, as stored): "
    "one byte per weight (uint8: ONNX has no uint8 -> float8 bitcast, so the body decodes the bits with integer "
    "ops, exactly), w = e4m3 * scale[row] in float32, cast to T. A per-tensor scale is broadcast to its rows at "
    "export (exact). The weights are dequantized, then the experts run as in MoEExperts.",
    inputs=(
        *MOE_EXPERTS_Q.inputs[:3],
        Tensor("w13_codes", "tensor(uint8)", "[E, 2I, H]", "gate and up rows: e4m3fn bytes"),
        Tensor("w13_scales", "T", "[E, 2I]", "scale of each row"),
        Tensor("w2_codes", "tensor(uint8)", "[E, H, I]", "down rows: e4m3fn bytes"),
        Tensor("w2_scales", "T", "[E, H]", "scale of each row"),
    ),
    outputs=MOE_EXPERTS_Q.outputs,
)

OPS: dict[str, OpSpec] = {spec.name: spec for spec in (MOE_ROUTER, MOE_EXPERTS, MOE_EXPERTS_Q, LINEAR_Q,
                                                       MOE_EXPERTS_QZ, LINEAR_QZ, MOE_EXPERTS_QZP,
                                                       MOE_EXPERTS_F8)}
