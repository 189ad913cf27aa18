"""MoEAlign as an ONNX Runtime Python op (onnxruntime-extensions `PyOp`; plugins/cpu_ops.py registers it)."""

from __future__ import annotations

from typing import Any

from ..cpu_common import fields, tensor
from . import SPEC


def register(onnx_op: Any, types: Any) -> None:
    """Define the op with onnxruntime-extensions' `onnx_op` (`types`: its PyCustomOpDef)."""
    from .launch import run

    i32 = types.dt_int32

    @onnx_op(op_type=SPEC.name, inputs=[i32], outputs=[i32, i32, i32], attrs=fields(SPEC, types))
    def _align(experts, **attrs):
        return tuple(o.numpy() for o in run(tensor(experts), int(attrs["num_experts"]), int(attrs["block_size"])))
