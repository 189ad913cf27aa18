"""MoERouter as an ONNX Runtime Python op (onnxruntime-extensions `PyOp`; plugins/cpu_ops.py registers it)."""

from __future__ import annotations

from typing import Any

from ..cpu_common import fields, tensor
from . import SPEC


def register(onnx_op: Any, types: Any) -> None:
    """Define the op with onnxruntime-extensions' `onnx_op` (`types`: its PyCustomOpDef)."""
    from .launch import run

    f32, i32 = types.dt_float, types.dt_int32

    @onnx_op(op_type=SPEC.name, inputs=[f32], outputs=[f32, i32], attrs=fields(SPEC, types))
    def _router(logits, **attrs):
        weights, experts = run(tensor(logits), int(attrs["top_k"]))
        return weights.numpy(), experts.numpy()
