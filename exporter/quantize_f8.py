"""A compressed-tensors float-quantized (FP8 e4m3) checkpoint's experts exported as stored: every MoEExperts node
becomes MoEExpertsF8 with the checkpoint's e4m3fn bytes (uint8 [E, N, K]) and one scale per output row ([E, N] in
the export dtype; a per-tensor scale broadcast to its rows: exact). The attention projections and the LM head go out
as their exact float dequantization (quantize_stored.py's fallback). E experts, N output rows, K input features."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import QuantScheme

from .lowering.common import swap_in
from .ops.spec import DOMAIN, MOE_EXPERTS_F8, MOE_EXPERTS_Q
from .quantize import QuantizedExperts, quantize_experts
from .quantize_stored import _checked_scales, expert_spans

BYTES = QuantScheme(8, 0)  # one byte per weight, one scale per row: the shapes QuantizedExperts gives them


class StoredF8Experts(QuantizedExperts):
    """The experts' e4m3 bytes and per-row scales as the checkpoint stores them (source: a StreamedTensor of
    QuantizedSpans), each linear read once: reading an expert for its codes (written first) keeps its scale rows
    until the scales are written."""

    def __init__(self, source, scheme: QuantScheme, scale_dtype: str) -> None:
        super().__init__(source, scheme, scale_dtype)
        self.kept: dict[int, np.ndarray] = {}  # expert -> its scale rows [N], kept from the codes' read

    def _read(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [N, K] e4m3 values, float32 [N] scale of each row) of expert e: one read of its linears."""
        parts = [span.linear() for span in expert_spans(self.source, e)]
        return (np.concatenate([p.codes for p in parts]),
                np.concatenate([np.broadcast_to(p.scales.reshape(-1), (p.codes.shape[0],)) for p in parts]))

    def scales(self) -> np.ndarray:
        """[E, N] in the export dtype (checked exact)."""
        rows = [self.kept.pop(e) if e in self.kept else self._read(e)[1] for e in range(self.e)]
        return _checked_scales(np.stack(rows), self.scale_dtype, self.source.name)

    def codes(self, e: int) -> np.ndarray:
        """uint8 [N, K]: expert e's e4m3fn bytes (the stored values, exact: checked)."""
        import ml_dtypes

        values, self.kept[e] = self._read(e)
        codes = values.astype(ml_dtypes.float8_e4m3fn)
        if not np.array_equal(codes.astype(np.float32), values, equal_nan=True):
            raise MixtralTrtError(f"{self.source.name}: expert {e}'s FP8 weights are not e4m3fn values")
        return codes.view(np.uint8)


def quantize_f8(model: ir.Model, dtype: str) -> None:
    """Every MoEExperts node -> MoEExpertsF8 on the checkpoint's e4m3 bytes and per-row scales."""
    quantize_experts(model, BYTES, dtype, StoredF8Experts)
    for node in list(model.graph):
        if node.domain == DOMAIN and node.op_type == MOE_EXPERTS_Q.name:
            new = ir.node(MOE_EXPERTS_F8.name, list(node.inputs), domain=DOMAIN, name=f"{node.name}.f8")
            swap_in(model.graph, new, node.outputs[0], [node])
