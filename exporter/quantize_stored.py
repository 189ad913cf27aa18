"""A quantized checkpoint (GPTQ / AWQ / compressed-tensors) exported as it is stored: its codes and scales
become MoEExpertsQ / LinearQ initializers as they are, never dequantized and quantized again.

The storage format (common/quant.py) takes a checkpoint's integer weights as they are when their groups are
contiguous (no act-order g_idx) of 32 / 64 / 128 inputs or one per output channel, and the export dtype holds
the stored scales exactly (fp32 always; fp16 / bf16 only scales stored in that dtype). Symmetric codes (zero
point 2^(bits-1): GPTQ sym, compressed-tensors symmetric) become MoEExpertsQ / LinearQ; asymmetric ones (GPTQ
asym, AWQ, compressed-tensors asymmetric) with groups become MoEExpertsQZ / LinearQZ, their zero points as
stored (ONNX Runtime's QMoE and MatMulNBits take them as they are); per-channel asymmetric codes too, in blocks
of B inputs (channel_block: the largest power of two of 16 to 128 dividing every quantized linear's K), each
row's scale and zero point repeated K/B times (a per-row value is the block-wise one equal in every block; with
no such B, the fallback). Act-order checkpoints (GPTQ desc_act,
compressed-tensors actorder group: a g_idx out of order) are kept as codes too, their input channels sorted by
group so that the groups become contiguous blocks, which changes no product:

    W x = W[:, p] x[p]        p = argsort(g_idx) (stable), the inputs of group j at positions [j*gs, (j+1)*gs)

  experts' w2     p2[e] over I is folded into the rows of expert e's w1 and w3 (their outputs are w2's inputs:
                  rows reordered with their scales and zero points), so it costs nothing at run time;
  experts' w1/w3  one order per expert (w1 and w3 see the same inputs, so GPTQ's Hessian order is the same:
                  checked; else the fallback), kept as MoEExpertsQZP's w13_order (the lowering gathers each
                  expert's tokens' features in that order);
  attention / LM  a Gather of the activations' features before LinearQ / LinearQZ.

Act-order experts are always MoEExpertsQZP (zero points 2^(bits-1) when symmetric). Every other checkpoint takes
the one fallback: each linear dequantized by its format (float32, mixtral_ref/quant_linear.py), cast to the export
dtype, exported as float weights; `plan` says which and why, and the contract (hence the engine manifest)
records it in extra["checkpoint_quantization"]. FP8 checkpoints keep their experts' e4m3 bytes (MoEExpertsF8,
quantize_f8.py; extra["checkpoint_quantization"]["fp8_experts"], no extra["quantization"]: every lowering but
`trt` converts them exactly to float at build) when the export dtype holds their scales exactly; their attention
projections and LM head, and every other FP8 checkpoint, take the fallback (e4m3 -> float32 is exact, and so is
the product with a bf16 / fp16 scale). Either way each stored tensor of a quantized linear is read
once: codes, scales and zero points come from one read of the linear (_OneRead), an act-order g_idx from the
plan's read (`orders`). E experts, N output rows, K input features.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx_ir as ir

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref.quant_checkpoint import QuantizedLinears
from mixtral_trt.mixtral_ref.quant_linear import g_idx_of_order

from .lowering.common import swap_in
from .ops.spec import DOMAIN, LINEAR_Q, LINEAR_QZ, MOE_EXPERTS_Q, MOE_EXPERTS_QZ, MOE_EXPERTS_QZP
from .quantize import QuantizedExperts, quantize_experts
from .quantize_dense import QuantizedLinear, quantize_linears
from .streaming import QuantizedSpan, StreamedTensor

# export dtype -> stored scale dtypes it represents exactly
EXACT_SCALES = {"fp32": {"F32", "F16", "BF16"}, "fp16": {"F16"}, "bf16": {"BF16"}}
DENSE = ("attn.wq.weight", "attn.wk.weight", "attn.wv.weight", "attn.wo.weight")


def _down_key(up_key: str) -> str:
    """The stored key of the down projection (w2) of the expert whose gate projection (w1) is `up_key`."""
    return up_key.removesuffix(".w1.weight") + ".w2.weight"


def _act_order_refusal(quantized: QuantizedLinears, entries, orders: dict | None) -> str | None:
    """Why an act-order checkpoint cannot be kept as codes (groups not whole blocks, or an expert's w1 and w3 in
    different input orders), or None. `orders` (key -> input order): None when not read."""
    gs = quantized.quant.group_size
    if gs > 0 and any(k % gs for _, _, k in quantized.linears.values()):
        return f"act-order groups of {gs} do not tile every linear's inputs"
    for entry in entries if orders is not None else ():
        if entry.kind != "w13":
            continue
        for w1, w3 in zip(entry.parts[0::2], entry.parts[1::2], strict=True):
            a, b = orders.get(w1.key), orders.get(w3.key)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                return (f"act-order: {w1.key} and {w3.key} were quantized in different input orders (g_idx); "
                        "an expert's gate and up rows share one")
    return None


def plan(quantized: QuantizedLinears, entries, dtype: str, tensor_parallel: int = 1, orders: dict | None = None
         ) -> tuple[dict, dict | None]:
    """(extra["checkpoint_quantization"], extra["quantization"] or None when the weights go out as float).
    `orders`: the act-order input orders (mixtral_ref.checkpoint.input_orders), checked when given (an export);
    without them (inspect) an act-order checkpoint is assumed to have one order per expert's w1 and w3, as GPTQ
    gives."""
    q = quantized.quant
    record = {**q.summary(), "quantized": quantized.kinds()}
    reason = None
    expert_parts = [p.key for e in entries if e.kind in ("w13", "w2") for p in e.parts]
    act_order = q.act_order and q.kind != "fp8" and q.group_size > 0 and (orders is None or bool(orders))
    block = q.group_size  # per-channel zero points: repeated over blocks of channel_block's inputs
    fp8_reason = None
    if q.kind == "fp8":
        fp8_reason = _fp8_refusal(quantized, expert_parts, dtype, tensor_parallel)
        if fp8_reason is None:
            return {**record, "exported_as": "stored (FP8 e4m3 experts as MoEExpertsF8: the checkpoint's bytes and "
                    "per-row scales; attention projections and LM head exact float)", "fp8_experts": True}, None
        reason = f"FP8 weights are converted exactly to float (e4m3 x scale, float32) at export: {fp8_reason}"
    elif not q.symmetric and not q.group_size and not (block := channel_block(quantized)):
        reason = ("per-channel zero points: no power-of-two block of 16 to 128 inputs divides every quantized "
                  "linear's inputs (" + ", ".join(map(str, sorted({k for _, _, k in quantized.linears.values()})))
                  + "), so they cannot be repeated over blocks")
    elif act_order and (refusal := _act_order_refusal(quantized, entries, orders)):
        reason = refusal
    elif not all(k in quantized.linears for k in expert_parts):
        reason = "not every expert weight is quantized"
    elif not quantized.scale_dtypes <= EXACT_SCALES[dtype]:
        reason = f"{dtype} does not hold the stored {'/'.join(sorted(quantized.scale_dtypes))} scales exactly"
    elif tensor_parallel != 1:
        reason = "tensor-parallel exports take the checkpoint's weights as float"
    if reason:
        return {**record, "exported_as": "float (dequantized by the format)", "reason": reason}, None
    scheme = QuantScheme(q.bits, block)
    linears = []
    if scheme.block_size:  # LinearQ runs block-wise only (MatMulNBits)
        linears = [e.name for e in entries if e.name.endswith(DENSE) or e.name == "lm_head.weight"
                   if e.parts[0].key in quantized.linears]
    spec = {"scheme": scheme.name, "bits": scheme.bits, "block_size": scheme.block_size, "dense": bool(linears),
            "source": "checkpoint", "linears": linears, "zero_points": not q.symmetric,
            "input_order": act_order}
    how = "stored (codes and scales as the checkpoint has them"
    if act_order:
        how += "; act-order input channels sorted by group: MoEExpertsQZP, a Gather before each linear"
    if block != q.group_size:
        how += f"; per-channel scales and zero points repeated over blocks of {block} inputs"
    return {**record, "exported_as": how + ")"}, spec


def channel_block(quantized: QuantizedLinears) -> int:
    """The block size per-channel scales and zero points are repeated over (the block-wise storage format holds
    them so: one value in every block of the row): the largest power of two of 16 to 128 (MatMulNBits' and
    QMoE's block sizes) dividing every quantized linear's inputs K; 0 when none does."""
    ks = [k for _, _, k in quantized.linears.values()]
    return next((b for b in (128, 64, 32, 16) if all(k % b == 0 for k in ks)), 0)


def _fp8_refusal(quantized: QuantizedLinears, expert_parts: list[str], dtype: str, tensor_parallel: int
                 ) -> str | None:
    """Why an FP8 checkpoint's experts cannot go out as MoEExpertsF8 (then all its weights go out as float)."""
    if not all(k in quantized.linears for k in expert_parts):
        return "not every expert weight is quantized"
    if not quantized.scale_dtypes <= EXACT_SCALES[dtype]:
        return f"{dtype} does not hold the stored {'/'.join(sorted(quantized.scale_dtypes))} scales exactly"
    if tensor_parallel != 1:
        return "tensor-parallel exports take the checkpoint's weights as float"
    return None


def _checked_scales(scales: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """The stored scales in the export's scale dtype, which `plan` chose to hold them exactly."""
    out = scales.astype(dtype)
    if not np.array_equal(out.astype(np.float32), scales):
        raise MixtralTrtError(f"{what}: its stored scales do not fit {dtype} exactly")
    return out


def expert_spans(source, e: int) -> list[QuantizedSpan]:
    """Expert e's stored linears in a StreamedTensor of QuantizedSpans: [w1, w3] of a w13 entry, [w2] of a w2 one."""
    spans = source.spans
    return spans[2 * e : 2 * e + 2] if source.entry.kind == "w13" else spans[e : e + 1]


class _OneRead:
    """Each quantized linear's stored tensors read once per export (streaming._read), though its codes, scales
    and zero points are three initializers written one after the other: reading a linear for its codes (the
    first written) keeps its scales (in the export dtype, checked) and packed zero points until those are
    written, then drops them; nothing stays for the rest of the export. A part asked for with nothing kept
    (another order of writes) reads the linear again. `orders` (stored key -> input order of an act-order
    linear) also gives the linears' g_idx (g_idx_of_order), so the stored g_idx, read at plan time, is not read
    again; `zeros`: whether the zero points are written (else none are kept)."""

    def __init__(self, scheme: QuantScheme, scale_dtype: np.dtype, name: str, orders: dict | None, zeros: bool,
                 act_order: bool) -> None:
        self.scheme, self.scale_dtype, self.name, self.zeros = scheme, scale_dtype, name, zeros
        self.orders, self.act_order = orders or {}, act_order
        self.kept: dict[tuple[str, object], np.ndarray] = {}  # (part, index) -> kept scales / packed zeros

    def read(self, span: QuantizedSpan, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes [N, K] columns in the export's order, scales [N, G] in the export dtype, zero points [N, G]) of
        one linear, rows in `rows`' order; one read of each of its stored tensors."""
        g_idx = None
        if self.act_order:
            g_idx = g_idx_of_order(self.orders.get(span.key), span.shape[1], self.scheme.block_size)
        lin = span.linear(g_idx)
        codes, scales, zeros = (a if rows is None else a[rows] for a in (lin.codes, lin.scales, lin.zeros))
        if self.scheme.block_size and scales.shape[1] == 1:  # per channel: the row's value in each of its blocks
            blocks = span.shape[1] // self.scheme.block_size
            scales, zeros = np.repeat(scales, blocks, axis=1), np.repeat(zeros, blocks, axis=1)
        order = self.orders.get(span.key)
        return (codes if order is None else codes[:, order], _checked_scales(scales, self.scale_dtype, self.name),
                zeros)

    def keep(self, index, scales: np.ndarray, zeros: np.ndarray) -> None:
        self.kept[("scales", index)] = scales
        if self.zeros:
            self.kept[("zeros", index)] = self.scheme.pack_zeros(zeros)

    def take(self, part: str, index) -> np.ndarray | None:
        return self.kept.pop((part, index), None)


class StoredExperts(QuantizedExperts):
    """The experts' codes and scales as the checkpoint stores them (source: a StreamedTensor of QuantizedSpans);
    `orders` (stored key -> input order) reorders act-order inputs, w2's into the rows of w1 and w3; each
    linear read once (_OneRead)."""

    def __init__(self, source, scheme: QuantScheme, scale_dtype: str, orders: dict | None = None,
                 zeros: bool = False, act_order: bool = False) -> None:
        super().__init__(source, scheme, scale_dtype)
        self.orders = orders or {}
        self.once = _OneRead(scheme, self.scale_dtype, source.name, orders, zeros, act_order)

    def _spans(self, e: int) -> list[QuantizedSpan]:
        return expert_spans(self.source, e)

    def _rows(self, e: int) -> np.ndarray | None:
        """Order of expert e's rows: w2's input order for w1 / w3 (None: as stored)."""
        return self.orders.get(_down_key(self._spans(e)[0].key)) if self.source.entry.kind == "w13" else None

    def order(self, e: int) -> np.ndarray:
        """int64 [K]: the input feature of each column of expert e's codes."""
        order = self.orders.get(self._spans(e)[0].key)
        return np.arange(self.k) if order is None else order

    def _expert(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expert e's codes [N, K], scales [N, G] and zero points [N, G], its linears stacked, rows (and codes'
        columns) in the export's order."""
        parts = [self.once.read(span, self._rows(e)) for span in self._spans(e)]
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))

    def _kept(self, part: str, e: int) -> np.ndarray:
        kept = self.once.take(part, e)
        if kept is None:  # not read for its codes first: read it now, keep the other part
            _, scales, zeros = self._expert(e)
            self.once.keep(e, scales, zeros)
            kept = self.once.take(part, e)
        return kept

    def codes(self, e: int) -> np.ndarray:
        codes, scales, zeros = self._expert(e)
        self.once.keep(e, scales, zeros)
        return self.scheme.pack(codes)

    def scales(self) -> np.ndarray:
        """Not cached (unlike QuantizedExperts', whose codes need them): kept from the codes' read until written."""
        stacked = np.stack([self._kept("scales", e) for e in range(self.e)])  # [E, N, G]
        return stacked if self.scheme.block_size else stacked[..., 0]

    def zeros(self) -> np.ndarray:
        """uint8 [E, N, ceil(G*bits/8)]: the stored zero points, packed (common/quant.py)."""
        return np.stack([self._kept("zeros", e) for e in range(self.e)])


class StoredLinear(QuantizedLinear):
    """A linear's codes and scales as the checkpoint stores them (`orders`: act-order columns sorted by group),
    read once (_OneRead)."""

    def __init__(self, source, scheme: QuantScheme, scale_dtype: str, orders: dict | None = None,
                 zeros: bool = False, act_order: bool = False) -> None:
        super().__init__(source, scheme, scale_dtype)
        self.input_order = (orders or {}).get(source.spans[0].key)
        self.once = _OneRead(scheme, self.scale_dtype, source.name, orders, zeros, act_order)

    def _read(self) -> np.ndarray:
        codes, scales, zeros = self.once.read(self.source.spans[0])
        self.once.keep(None, scales, zeros)
        return codes

    def scales(self, w: np.ndarray | None = None) -> np.ndarray:
        if self._scales is None:
            if (kept := self.once.take("scales", None)) is None:
                self._read()
                kept = self.once.take("scales", None)
            self._scales = kept
        return self._scales

    def code_bands(self):
        yield self.scheme.pack(self._read())

    def zeros(self) -> np.ndarray:
        if (kept := self.once.take("zeros", None)) is None:
            self._read()
            kept = self.once.take("zeros", None)
        return kept


def is_stored(tensor) -> bool:
    """Whether an initializer's tensor is a quantized linear of the checkpoint."""
    return isinstance(tensor, StreamedTensor) and all(isinstance(s, QuantizedSpan) for s in tensor.spans)


def quantize_stored(model: ir.Model, spec: dict, dtype: str, orders: dict | None = None) -> None:
    """MoEExpertsQ / LinearQ from the checkpoint's codes (plan's extra["quantization"]); with zero points
    MoEExpertsQZ / LinearQZ; act-order (spec["input_order"]) MoEExpertsQZP and a Gather before each linear.
    `orders`: the act-order input orders plan was given (mixtral_ref.checkpoint.input_orders), needed then."""
    scheme = QuantScheme(spec["bits"], spec["block_size"])
    act_order = spec.get("input_order", False)
    if act_order and orders is None:
        raise ValueError("an act-order checkpoint's stored codes need its input orders (input_orders)")
    orders = orders if act_order else {}
    experts_zeros = spec["zero_points"] or act_order  # MoEExpertsQZP carries zero points even when symmetric
    quantize_experts(model, scheme, dtype, functools.partial(StoredExperts, orders=orders, zeros=experts_zeros,
                                                             act_order=act_order))
    if spec.get("dense"):
        quantize_linears(model, scheme, dtype, functools.partial(StoredLinear, orders=orders,
                                                                 zeros=spec["zero_points"], act_order=act_order),
                         only=is_stored)
    if spec.get("zero_points") or act_order:
        _with_zero_points(model, spec["zero_points"], act_order)
        _written_together(model.graph)


def _written_together(graph: ir.Graph) -> None:
    """Put each `X.zeros` / `X.input_order` initializer right after `X.scales` (after `X.codes`), so that the
    external data is written one linear's parts after another (_OneRead keeps a part only until it is written)."""
    inits = graph.initializers
    extras = {n: v for n, v in inits.items() if n.endswith((".zeros", ".input_order"))}
    ordered = []
    for name, value in inits.items():
        if name.endswith((".zeros", ".input_order")):
            continue
        ordered.append(value)
        if name.endswith(".scales"):
            base = name.removesuffix(".scales")
            ordered += [extras.pop(base + s) for s in (".zeros", ".input_order") if base + s in extras]
    ordered += extras.values()
    for value in ordered:
        inits.pop(value.name)
        inits.add(value)


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


def _order_value(graph: ir.Graph, codes: ir.Value) -> ir.Value | None:
    """int64 [E, K] (experts) or [K] (a linear): the input order of the act-order codes' columns, None for a
    linear whose columns are in order."""
    q = codes.const_value.q
    name = codes.name.removesuffix(".codes") + ".input_order"
    if isinstance(q, StoredExperts):
        array = np.stack([q.order(e) for e in range(q.e)])
    elif q.input_order is not None:
        array = q.input_order
    else:
        return None
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.INT64),
                     const_value=ir.Tensor(np.ascontiguousarray(array, np.int64), name=name))
    graph.register_initializer(value)
    return value


def _with_zero_points(model: ir.Model, zero_points: bool, input_order: bool) -> None:
    """MoEExpertsQ -> MoEExpertsQZ and (`zero_points`: asymmetric codes) LinearQ -> LinearQZ, with the
    checkpoint's zero points; `input_order`: MoEExpertsQZP (w13_order added; symmetric codes' zero points are
    2^(bits-1)) and a Gather of the features before each linear whose columns are reordered."""
    graph = model.graph
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type not in (MOE_EXPERTS_Q.name, LINEAR_Q.name):
            continue
        inputs = list(node.inputs)
        if node.op_type == MOE_EXPERTS_Q.name:
            op, extra = MOE_EXPERTS_QZ.name, [_zeros_value(graph, inputs[3]), _zeros_value(graph, inputs[5])]
            if input_order:
                op, extra = MOE_EXPERTS_QZP.name, [*extra, _order_value(graph, inputs[3])]
        else:
            op, extra = (LINEAR_QZ.name, [_zeros_value(graph, inputs[1])]) if zero_points else (LINEAR_Q.name, [])
            if input_order and (order := _order_value(graph, inputs[1])) is not None:
                gather = ir.node("Gather", [inputs[0], order], attributes={"axis": -1}, name=f"{node.name}.order")
                gather.outputs[0].type, gather.outputs[0].shape = inputs[0].type, inputs[0].shape
                graph.insert_before(node, gather)
                inputs[0] = gather.outputs[0]
        new = ir.node(op, [*inputs, *extra], domain=DOMAIN, name=f"{node.name}z",
                      attributes={k: a.as_int() for k, a in node.attributes.items()})
        swap_in(graph, new, node.outputs[0], [node])


def weight_bytes(quantized: QuantizedLinears, entries, dtype: str) -> tuple[int, str]:
    """(bytes of the exported weights, how: "stored[, act-order inputs reordered]" | "stored, FP8 experts" |
    "float") for an export of the checkpoint in `dtype`: codes (FP8: e4m3 bytes), scales and zero points where
    `plan` keeps them, `dtype` floats for the rest."""
    record, spec = plan(quantized, entries, dtype)
    item = {"fp32": 4, "fp16": 2, "bf16": 2}[dtype]
    kept = set()
    if record.get("fp8_experts"):  # e4m3 bytes and one scale per row (MoEExpertsF8); the rest float
        kept = {p.key for e in entries if e.kind in ("w13", "w2") for p in e.parts}
        spec = {"bits": 8, "block_size": 0, "zero_points": False, "input_order": False, "linears": []}
    elif spec is not None:
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
            if spec["zero_points"] or (spec["input_order"] and entry.kind in ("w13", "w2")):
                total += n * -(-groups * spec["bits"] // 8)
    how = ("float" if spec is None else "stored, FP8 experts" if record.get("fp8_experts")
           else "stored, act-order inputs reordered" if spec["input_order"] else "stored")
    return total, how
