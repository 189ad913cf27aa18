"""Lowerings of the canonical graph, one module per target:

- `ort`: each MoERouter + MoEExperts pair becomes one `com.microsoft::MoE` / `QMoE` node (ONNX Runtime CUDA,
  quantized experts) or a MatMul pair per expert (`ort_experts.py`: float experts on the CPU);
- `portable`: the custom ops are inlined from their function bodies (standard ONNX ops only);
- `trt`: the pair becomes the sparse-dispatch plugin nodes of plugins/ (TensorRT, and plugins-cpu).

FP8 experts (MoEExpertsF8) reach `trt` as they are (its F8 GEMM plugins); every other lowering first takes them as
their exact float dequantization (`f8_float.py`).

Every lowering takes and returns an onnx_ir Model and never touches other nodes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mixtral_trt.common.errors import MixtralTrtError

if TYPE_CHECKING:
    import onnx_ir as ir

TARGETS = ("ort", "portable", "trt")


def lower(model: ir.Model, target: str, **options) -> ir.Model:
    """Apply lowering `target`; `options` go to it (e.g. the `trt` lowering's node `domain`)."""
    if target not in TARGETS:
        raise MixtralTrtError(f"unknown lowering {target!r}; choose one of {', '.join(TARGETS)}")
    module = importlib.import_module(f"{__name__}.{target}")
    if target != "trt":
        from .f8_float import f8_to_float

        model = f8_to_float(model)
    return module.lower(model, **options)
