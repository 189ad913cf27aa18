"""MoEGemmDown as an ONNX Runtime Python op (onnxruntime-extensions `PyOp`; plugins/cpu_ops.py registers it)."""

from __future__ import annotations

from typing import Any

from ..cpu_common import fields, tensor
from . import SPEC


def register(onnx_op: Any, types: Any) -> None:
    """Define the op with onnxruntime-extensions' `onnx_op` (`types`: its PyCustomOpDef)."""
    from .launch import run

    f32, i32 = types.dt_float, types.dt_int32

    @onnx_op(op_type=SPEC.name, inputs=[f32, i32, i32, i32, f32, f32], outputs=[f32], attrs=fields(SPEC, types))
    def _gemm_down(inter, sorted_pairs, block_experts, num_padded, weights, w2, **attrs):
        out = run(tensor(inter), tensor(sorted_pairs), tensor(block_experts), tensor(num_padded), tensor(weights),
                  tensor(w2), int(attrs["top_k"]), int(attrs["block_size"]))
        return out.numpy()
