"""MoEGemmDownF8 as an ONNX Runtime Python op (onnxruntime-extensions `PyOp`; plugins/cpu_ops.py registers it)."""

from __future__ import annotations

from typing import Any

from ..cpu_common import codes_as_bytes, fields, tensor
from . import SPEC


def register(onnx_op: Any, types: Any) -> None:
    """Define the op with onnxruntime-extensions' `onnx_op` (`types`: its PyCustomOpDef)."""
    from .launch import run

    f32, i32 = types.dt_float, types.dt_int32

    @onnx_op(op_type=SPEC.name, inputs=[f32, i32, i32, i32, f32, i32, f32], outputs=[f32],
             attrs=fields(SPEC, types))
    def _gemm_down_f8(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, **attrs):
        return run(tensor(inter), tensor(sorted_pairs), tensor(block_experts), tensor(num_padded), tensor(weights),
                   codes_as_bytes(codes), tensor(scales), int(attrs["top_k"]), int(attrs["block_size"])).numpy()
