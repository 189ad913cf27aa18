"""`export --quantize`: every MoEExperts node becomes MoEExpertsQ with quantized expert weights.

The codes and scales are lazy: scales are computed in one pass over the experts (they are small), codes
expert by expert while the external data is written, so a streamed export stays streamed. E experts,
N output rows, K input features.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixtral_trt.common.dtypes import DTYPES, numpy_dtype
from mixtral_trt.common.quant import QuantScheme

from .ops.spec import DOMAIN, MOE_EXPERTS, MOE_EXPERTS_Q

IR_TYPES = {"float32": ir.DataType.FLOAT, "float16": ir.DataType.FLOAT16, "bfloat16": ir.DataType.BFLOAT16}


def expert_rows(source: ir.TensorProtocol, e: int) -> np.ndarray:
    """Expert e's [N, K] weights as float32, read on their own when the source streams from a checkpoint."""
    from .streaming import StreamedTensor, _read

    if hasattr(source, "expert"):  # a rank's share of the experts (exporter/shard/weights.py)
        return source.expert(e)
    if isinstance(source, StreamedTensor) and source.entry.kind in ("w13", "w2"):
        spans = source.spans[2 * e : 2 * e + 2] if source.entry.kind == "w13" else source.spans[e : e + 1]
        return np.concatenate([_read(s).float().numpy() for s in spans], axis=0)
    return np.asarray(source.numpy()[e], np.float32)


class QuantizedExperts:
    """Codes and scales of one stacked expert weight [E, N, K], computed lazily."""

    def __init__(self, source: ir.TensorProtocol, scheme: QuantScheme, scale_dtype: str) -> None:
        self.source, self.scheme = source, scheme
        self.scale_dtype = numpy_dtype(scale_dtype)
        self.e, self.n, self.k = (int(d) for d in source.shape)
        self._scales: np.ndarray | None = None

    def scales(self) -> np.ndarray:
        if self._scales is None:
            per_expert = [self.scheme.scales_for(expert_rows(self.source, e)) for e in range(self.e)]
            # rounded to the activation dtype first, so that codes are computed against the stored scales
            self._scales = np.stack(per_expert).astype(self.scale_dtype)
        return self._scales

    def codes(self, e: int) -> np.ndarray:
        return self.scheme.encode(expert_rows(self.source, e), self.scales()[e])

    @property
    def codes_shape(self) -> tuple[int, int, int]:
        return (self.e, self.n, self.k * self.scheme.bits // 8)

    @property
    def scales_shape(self) -> tuple[int, ...]:
        b = self.scheme.block_size
        return (self.e, self.n, self.k // b) if b else (self.e, self.n)


class CodesTensor(ir.LazyTensor):
    """The uint8 codes; `tofile` writes them expert by expert."""

    def __init__(self, q: QuantizedExperts, name: str) -> None:
        self.q = q
        super().__init__(lambda: ir.Tensor(np.stack([q.codes(e) for e in range(q.e)]), name=name),
                         dtype=ir.DataType.UINT8, shape=ir.Shape(q.codes_shape), name=name)

    def tofile(self, file) -> None:
        for e in range(self.q.e):
            file.write(memoryview(np.ascontiguousarray(self.q.codes(e))).cast("B"))


def quantized_tensors(source: ir.TensorProtocol, scheme: QuantScheme, act: str, name: str,
                      factory=QuantizedExperts) -> tuple[ir.TensorProtocol, ir.TensorProtocol]:
    """The lazy codes `{name}.codes` and scales `{name}.scales` of the expert weight `source` [E, N, K]
    (`factory`: QuantizedExperts, or the codes a quantized checkpoint stores: quantize_stored.py)."""
    q = factory(source, scheme, act)
    scales = ir.LazyTensor(lambda: ir.Tensor(q.scales()), dtype=IR_TYPES[act], shape=ir.Shape(q.scales_shape),
                           name=f"{name}.scales")
    return CodesTensor(q, f"{name}.codes"), scales


def quantize_experts(model: ir.Model, scheme: QuantScheme, dtype: str, factory=QuantizedExperts) -> int:
    """Replace every MoEExperts node by MoEExpertsQ; returns the number of nodes rewritten."""
    graph, count = model.graph, 0
    act = DTYPES[dtype]
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type != MOE_EXPERTS.name:
            continue
        x, experts, weights, w13, w2 = node.inputs
        inputs = [x, experts, weights]
        for value, what in ((w13, "hidden_size"), (w2, "intermediate_size")):
            if value.const_value is None:
                raise ValueError(f"{node.name}: expert weight {value.name} is not an initializer")
            scheme.check_dims(int(value.shape[2]), what)
            tensors = quantized_tensors(value.const_value, scheme, act, value.name, factory)
            codes, scales = (ir.Value(name=t.name, shape=t.shape, type=ir.TensorType(t.dtype), const_value=t)
                             for t in tensors)
            for v in (codes, scales):
                graph.register_initializer(v)
            inputs += [codes, scales]
        new = ir.node(MOE_EXPERTS_Q.name, inputs, domain=DOMAIN, name=f"{node.name}.q",
                      attributes={"bits": scheme.bits, "block_size": scheme.block_size})
        new.outputs[0].shape, new.outputs[0].type = node.outputs[0].shape, node.outputs[0].type
        graph.insert_before(node, new)
        ir.convenience.replace_all_uses_with(node.outputs[0], new.outputs[0])
        graph.remove(node, safe=True)
        for value in (w13, w2):
            if not value.uses():
                graph.initializers.pop(value.name)
        count += 1
    return count
