"""A quantized checkpoint (GPTQ / AWQ / compressed-tensors) exported as it is stored: its codes and scales
become MoEExpertsQ / LinearQ initializers as they are, never dequantized and quantized again.

The storage format (common/quant.py) takes a checkpoint's integer weights as they are when their groups are
contiguous (no act-order g_idx) of 32 / 64 / 128 inputs or one per output channel, and the export dtype holds
the stored scales exactly (fp32 always; fp16 / bf16 only scales stored in that dtype). Symmetric codes (zero
point 2^(bits-1): GPTQ sym, compressed-tensors symmetric) become MoEExpertsQ / LinearQ; asymmetric ones (GPTQ
asym, AWQ, compressed-tensors asymmetric) with groups become MoEExpertsQZ / LinearQZ, their zero points as
stored (ONNX Runtime's QMoE and MatMulNBits take them as they are). Every other checkpoint takes the one
fallback: each linear dequantized by its format (float32, mixtral_ref/quant_linear.py), cast to the export
dtype, exported as float weights; `plan` says which and why, and the contract (hence the engine manifest)
records it in extra["checkpoint_quantization"]. FP8 weights take that path by design: e4m3 -> float32 is
exact, and so is the product with a bf16 / fp16 scale. E experts, N output rows, K input features.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref.quant_checkpoint import QuantizedLinears

from .lowering.common import swap_in
from .ops.spec import DOMAIN, LINEAR_Q, LINEAR_QZ, MOE_EXPERTS_Q, MOE_EXPERTS_QZ
from .quantize import QuantizedExperts, quantize_experts
from .quantize_dense import QuantizedLinear, quantize_linears
from .streaming import QuantizedSpan, StreamedTensor

# export dtype -> stored scale dtypes it represents exactly
EXACT_SCALES = {"fp32": {"F32", "F16", "BF16"}, "fp16": {"F16"}, "bf16": {"BF16"}}
DENSE = ("attn.wq.weight", "attn.wk.weight", "attn.wv.weight", "attn.wo.weight")


def plan(quantized: QuantizedLinears, entries, dtype: str, tensor_parallel: int = 1
         ) -> tuple[dict, dict | None]:
    """(extra["checkpoint_quantization"], extra["quantization"] or None when the weights go out as float)."""
    q = quantized.quant
    record = {**q.summary(), "quantized": quantized.kinds()}
    reason = None
    expert_parts = [p.key for e in entries if e.kind in ("w13", "w2") for p in e.parts]
    if q.kind == "fp8":
        reason = "FP8 weights are converted exactly to float (e4m3 x scale, float32) at export"
    elif not q.symmetric and not q.group_size:
        reason = "per-channel zero points have no place in the storage format (zero points are block-wise)"
    elif q.act_order:
        reason = "act-order groups (g_idx) are not contiguous"
    elif not all(k in quantized.linears for k in expert_parts):
        reason = "not every expert weight is quantized"
    elif not quantized.scale_dtypes <= EXACT_SCALES[dtype]:
        reason = f"{dtype} does not hold the stored {'/'.join(sorted(quantized.scale_dtypes))} scales exactly"
    elif tensor_parallel != 1:
        reason = "tensor-parallel exports take the checkpoint's weights as float"
    if reason:
        return {**record, "exported_as": "float (dequantized by the format)", "reason": reason}, None
    scheme = QuantScheme(q.bits, q.group_size)
    linears = []
    if scheme.block_size:  # LinearQ runs block-wise only (MatMulNBits)
        linears = [e.name for e in entries if e.name.endswith(DENSE) or e.name == "lm_head.weight"
                   if e.parts[0].key in quantized.linears]
    spec = {"scheme": scheme.name, "bits": scheme.bits, "block_size": scheme.block_size, "dense": bool(linears),
            "source": "checkpoint", "linears": linears, "zero_points": not q.symmetric}
    return {**record, "exported_as": "stored (codes and scales as the checkpoint has them)"}, spec


def _checked_scales(scales: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """The stored scales in the export's scale dtype, which `plan` chose to hold them exactly."""
    out = scales.astype(dtype)
    if not np.array_equal(out.astype(np.float32), scales):
        raise MixtralTrtError(f"{what}: its stored scales do not fit {dtype} exactly")
    return out


class StoredExperts(QuantizedExperts):
    """The experts' codes and scales as the checkpoint stores them (source: a StreamedTensor of QuantizedSpans)."""

    def _spans(self, e: int) -> list[QuantizedSpan]:
        spans = self.source.spans
        return spans[2 * e : 2 * e + 2] if self.source.entry.kind == "w13" else spans[e : e + 1]

    def scales(self) -> np.ndarray:
        if self._scales is None:
            per_expert = [np.concatenate([s.linear().scales for s in self._spans(e)]) for e in range(self.e)]
            stacked = np.stack(per_expert)  # [E, N, G]
            self._scales = _checked_scales(stacked if self.scheme.block_size else stacked[..., 0],
                                           self.scale_dtype, self.source.name)
        return self._scales

    def codes(self, e: int) -> np.ndarray:
        return self.scheme.pack(np.concatenate([s.linear().codes for s in self._spans(e)]))

    def zeros(self) -> np.ndarray:
        """uint8 [E, N, ceil(G*bits/8)]: the stored zero points, packed (common/quant.py)."""
        return np.stack([self.scheme.pack_zeros(np.concatenate([s.linear().zeros for s in self._spans(e)]))
                         for e in range(self.e)])


class StoredLinear(QuantizedLinear):
    """A linear's codes and scales as the checkpoint stores them."""

    def scales(self, w: np.ndarray | None = None) -> np.ndarray:
        if self._scales is None:
            self._scales = _checked_scales(self.source.spans[0].linear().scales, self.scale_dtype, self.source.name)
        return self._scales

    def code_bands(self):
        yield self.scheme.pack(self.source.spans[0].linear().codes)

    def zeros(self) -> np.ndarray:
        return self.scheme.pack_zeros(self.source.spans[0].linear().zeros)


def is_stored(tensor) -> bool:
    """Whether an initializer's tensor is a quantized linear of the checkpoint."""
    return isinstance(tensor, StreamedTensor) and all(isinstance(s, QuantizedSpan) for s in tensor.spans)


def quantize_stored(model: ir.Model, spec: dict, dtype: str) -> None:
    """MoEExpertsQ / LinearQ from the checkpoint's codes (plan's extra["quantization"])."""
    scheme = QuantScheme(spec["bits"], spec["block_size"])
    quantize_experts(model, scheme, dtype, StoredExperts)
    if spec.get("dense"):
        quantize_linears(model, scheme, dtype, StoredLinear, only=is_stored)
    if spec.get("zero_points"):
        _with_zero_points(model)


def _zeros_value(graph: ir.Graph, codes: ir.Value) -> ir.Value:
    """The zero points beside `codes` (a CodesTensor / LinearCodes of a Stored* source), lazily."""
    q = codes.const_value.q
    name = codes.name.removesuffix(".codes") + ".zeros"
    probe_groups = q.k // q.scheme.block_size
    shape = (*((q.e,) if isinstance(q, StoredExperts) else ()), q.n, -(-probe_groups * q.scheme.bits // 8))
    lazy = ir.LazyTensor(lambda: ir.Tensor(q.zeros()), dtype=ir.DataType.UINT8, shape=ir.Shape(shape), name=name)
    value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(ir.DataType.UINT8), const_value=lazy)
    graph.register_initializer(value)
    return value


def _with_zero_points(model: ir.Model) -> None:
    """MoEExpertsQ -> MoEExpertsQZ and LinearQ -> LinearQZ, with the checkpoint's zero points."""
    graph = model.graph
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type not in (MOE_EXPERTS_Q.name, LINEAR_Q.name):
            continue
        if node.op_type == MOE_EXPERTS_Q.name:
            op, zeros = MOE_EXPERTS_QZ.name, [_zeros_value(graph, node.inputs[3]), _zeros_value(graph, node.inputs[5])]
        else:
            op, zeros = LINEAR_QZ.name, [_zeros_value(graph, node.inputs[1])]
        new = ir.node(op, [*node.inputs, *zeros], domain=DOMAIN, name=f"{node.name}z",
                      attributes={k: a.as_int() for k, a in node.attributes.items()})
        swap_in(graph, new, node.outputs[0], [node])


def weight_bytes(quantized: QuantizedLinears, entries, dtype: str) -> tuple[int, str]:
    """(bytes of the exported weights, "stored" | "float") for an export of the checkpoint in `dtype`: codes,
    scales and zero points where `plan` keeps them, `dtype` floats for everything else."""
    record, spec = plan(quantized, entries, dtype)
    item = {"fp32": 4, "fp16": 2, "bf16": 2}[dtype]
    kept = set()
    if spec is not None:
        kept = {p.key for e in entries if e.kind in ("w13", "w2") or e.name in spec["linears"] for p in e.parts}
    total = 0
    for entry in entries:
        for part in entry.parts:
            n_elements = int(np.prod(part.shape))
            if part.key not in kept:
                total += n_elements * item
                continue
            n, k = part.shape
            groups = k // spec["block_size"] if spec["block_size"] else 1
            total += n * k * spec["bits"] // 8 + n * groups * item
            if spec["zero_points"]:
                total += n * -(-groups * spec["bits"] // 8)
    return total, "stored" if spec is not None else "float"
