"""`portable` lowering: the custom ops are replaced by their function bodies (standard ONNX ops only).

The experts body is dense (every expert on every token): it runs on any ONNX backend, at E/k times the
expert FLOPs of sparse dispatch.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import InlinePass

from .common import tidy


def lower(model: ir.Model) -> ir.Model:
    model = InlinePass()(model).model
    return tidy(model)
