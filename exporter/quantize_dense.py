"""`export --quantize` (block-wise schemes): the attention projections and the LM head become
`mixtral::LinearQ` nodes with weight-only integer codes, in the experts' format (common/quant.py).

Decode at batch 1 reads every weight once per token; with only the experts quantized, the float
attention and LM head still dominate the bytes (on the `small` preset 136 MB of the 171 MB an int8 step
reads). The traced graph computes each of these linears as MatMul(x, Transpose(W)) with W an initializer
in torch's [N, K] layout; that pair becomes LinearQ(x, codes [N, K*bits/8], scales [N, K/block]). The router
(gate) stays float (it is tiny and decides the routing). A tied LM head (the embedding table, also read by
the Gather) stays float. Codes are computed while the external data is written (each weight read once).
N output features, K input features.
"""

from __future__ import annotations

import re

import numpy as np
import onnx_ir as ir

from mixtral_trt.common.dtypes import DTYPES, numpy_dtype
from mixtral_trt.common.quant import QuantScheme

from .lowering.common import swap_in
from .ops.spec import DOMAIN, LINEAR_Q
from .quantize import IR_TYPES

# initializer names (trace.WEIGHT_PREFIX + Mixtral state_dict key) of the linears that get quantized
DENSE_WEIGHTS = re.compile(r"^model\.(layers\.\d+\.attn\.w[qkvo]|lm_head)\.weight$")
ROWS_PER_BAND = 4096  # rows quantized at once while writing (bounds memory for 8x22B's LM head)


class QuantizedLinear:
    """Scales (computed once) and codes (band by band) of one [N, K] weight."""

    def __init__(self, source: ir.TensorProtocol, scheme: QuantScheme, scale_dtype: str) -> None:
        self.source, self.scheme = source, scheme
        self.scale_dtype = numpy_dtype(scale_dtype)
        self.n, self.k = (int(d) for d in source.shape)
        self._scales: np.ndarray | None = None

    def weight(self) -> np.ndarray:
        """[N, K] float32 (one read of the source: a streamed tensor reads the checkpoint each time)."""
        return np.asarray(self.source.numpy(), np.float32)

    def scales(self, w: np.ndarray | None = None) -> np.ndarray:
        if self._scales is None:
            w = self.weight() if w is None else w
            bands = [self.scheme.scales_for(w[a : a + ROWS_PER_BAND]) for a in range(0, self.n, ROWS_PER_BAND)]
            self._scales = np.concatenate(bands).astype(self.scale_dtype)  # rounded as stored
        return self._scales

    def code_bands(self):
        """The codes, ROWS_PER_BAND rows at a time (the float weight is read once)."""
        w = self.weight()
        scales = self.scales(w)
        for a in range(0, self.n, ROWS_PER_BAND):
            yield self.scheme.encode(w[a : a + ROWS_PER_BAND], scales[a : a + ROWS_PER_BAND])

    @property
    def codes_shape(self) -> tuple[int, int]:
        return (self.n, self.k * self.scheme.bits // 8)


class LinearCodes(ir.LazyTensor):
    """The uint8 codes; `tofile` writes them band by band."""

    def __init__(self, q: QuantizedLinear, name: str) -> None:
        self.q = q
        super().__init__(lambda: ir.Tensor(np.concatenate(list(q.code_bands())), name=name),
                         dtype=ir.DataType.UINT8, shape=ir.Shape(q.codes_shape), name=name)

    def tofile(self, file) -> None:
        for band in self.q.code_bands():
            file.write(memoryview(np.ascontiguousarray(band)).cast("B"))


def quantized_linear_tensors(source: ir.TensorProtocol, scheme: QuantScheme, act: str, name: str,
                             factory=QuantizedLinear) -> tuple[ir.TensorProtocol, ir.TensorProtocol]:
    """The lazy codes `{name}.codes` and scales `{name}.scales` of the linear weight `source` [N, K]."""
    q = factory(source, scheme, act)
    shape = ir.Shape((q.n, q.k // scheme.block_size))
    scales = ir.LazyTensor(lambda: ir.Tensor(q.scales()), dtype=IR_TYPES[act], shape=shape, name=f"{name}.scales")
    return LinearCodes(q, f"{name}.codes"), scales


def _transposed_weight(node: ir.Node) -> ir.Value | None:
    """W when `node` is MatMul(x, Transpose(W, perm=[1, 0])) with W a dense-linear initializer used only there."""
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
        return None
    t = node.inputs[1].producer() if node.inputs[1] is not None else None
    if t is None or t.op_type != "Transpose" or len(node.inputs[1].uses()) != 1:
        return None
    perm = t.attributes.get("perm")
    w = t.inputs[0]
    if (perm is not None and list(perm.as_ints()) != [1, 0]) or w is None or w.const_value is None:
        return None
    if not DENSE_WEIGHTS.match(w.name or "") or len(w.uses()) != 1 or len(w.shape or ()) != 2:
        return None
    return w


def quantize_linears(model: ir.Model, scheme: QuantScheme, dtype: str, factory=QuantizedLinear,
                     only=None) -> int:
    """Replace every quantizable MatMul(x, Transpose(W)) by LinearQ (`only`(W's tensor): those it accepts);
    returns the number replaced."""
    if not scheme.block_size:
        raise ValueError("dense linears are quantized block-wise only (MatMulNBits needs a block size)")
    graph, count = model.graph, 0
    act = DTYPES[dtype]
    for node in list(graph):
        w = _transposed_weight(node)
        if w is None or (only is not None and not only(w.const_value)):
            continue
        n, k = (int(d) for d in w.shape)
        scheme.check_dims(k, w.name)
        transpose = node.inputs[1].producer()
        codes_t, scales_t = quantized_linear_tensors(w.const_value, scheme, act, w.name, factory)
        codes = ir.Value(name=f"{w.name}.codes", shape=codes_t.shape, type=ir.TensorType(ir.DataType.UINT8),
                         const_value=codes_t)
        scales = ir.Value(name=f"{w.name}.scales", shape=scales_t.shape, type=ir.TensorType(IR_TYPES[act]),
                          const_value=scales_t)
        for v in (codes, scales):
            graph.register_initializer(v)
        new = ir.node(LINEAR_Q.name, [node.inputs[0], codes, scales], domain=DOMAIN, name=f"{node.name}.q",
                      attributes={"bits": scheme.bits, "block_size": scheme.block_size})
        swap_in(graph, new, node.outputs[0], [transpose, node])  # logits keep their contract name
        graph.initializers.pop(w.name)
        count += 1
    return count
