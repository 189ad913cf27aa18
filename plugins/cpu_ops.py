"""The plugin nodes as ONNX Runtime Python ops (onnxruntime-extensions `PyOp`, domain ai.onnx.contrib):
each runs the plugin's own Triton kernel under the interpreter, so ONNX Runtime executes the `trt`-lowered
graph on CPU with exactly the kernels TensorRT runs on the GPU. float32 activations (one dtype per op).
"""

from __future__ import annotations

import numpy as np

from .interpreter import require_interpreter

_REGISTERED = False


def register_cpu_ops() -> str:
    """Register the six ops once per process; returns the custom-op library path for SessionOptions."""
    global _REGISTERED
    require_interpreter()
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    if _REGISTERED:
        return get_library_path()
    import torch

    from . import MOE_ALIGN, MOE_GEMM_DOWN, MOE_GEMM_DOWN_Q, MOE_GEMM_SWIGLU, MOE_GEMM_SWIGLU_Q, MOE_ROUTER
    from .moe_align.launch import run as align
    from .moe_gemm_down.launch import run as gemm_down
    from .moe_gemm_down_q.launch import run as gemm_down_q
    from .moe_gemm_swiglu.launch import run as gemm_swiglu
    from .moe_gemm_swiglu_q.launch import run as gemm_swiglu_q
    from .moe_router.launch import run as router

    f32, i32, i64 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_int64

    def fields(spec):
        return {f.name: i64 for f in spec.fields}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    @onnx_op(op_type=MOE_ROUTER.name, inputs=[f32], outputs=[f32, i32], attrs=fields(MOE_ROUTER))
    def _router(logits, **attrs):
        weights, experts = router(t(logits), int(attrs["top_k"]))
        return weights.numpy(), experts.numpy()

    @onnx_op(op_type=MOE_ALIGN.name, inputs=[i32], outputs=[i32, i32, i32], attrs=fields(MOE_ALIGN))
    def _align(experts, **attrs):
        return tuple(o.numpy() for o in align(t(experts), int(attrs["num_experts"]), int(attrs["block_size"])))

    @onnx_op(op_type=MOE_GEMM_SWIGLU.name, inputs=[f32, i32, i32, i32, f32], outputs=[f32],
             attrs=fields(MOE_GEMM_SWIGLU))
    def _gemm_swiglu(x, sorted_pairs, block_experts, num_padded, w13, **attrs):
        out = gemm_swiglu(t(x), t(sorted_pairs), t(block_experts), t(num_padded), t(w13), int(attrs["top_k"]),
                          int(attrs["block_size"]))
        return out.numpy()

    @onnx_op(op_type=MOE_GEMM_DOWN.name, inputs=[f32, i32, i32, i32, f32, f32], outputs=[f32],
             attrs=fields(MOE_GEMM_DOWN))
    def _gemm_down(inter, sorted_pairs, block_experts, num_padded, weights, w2, **attrs):
        out = gemm_down(t(inter), t(sorted_pairs), t(block_experts), t(num_padded), t(weights), t(w2),
                        int(attrs["top_k"]), int(attrs["block_size"]))
        return out.numpy()

    def quant(attrs) -> tuple[int, int, int, int]:
        return int(attrs["top_k"]), int(attrs["block_size"]), int(attrs["bits"]), int(attrs["quant_block"])

    def as_bytes(a: np.ndarray) -> torch.Tensor:  # int32 elements packing the uint8 codes (the trt lowering)
        return t(np.ascontiguousarray(a).view(np.uint8))

    @onnx_op(op_type=MOE_GEMM_SWIGLU_Q.name, inputs=[f32, i32, i32, i32, i32, f32], outputs=[f32],
             attrs=fields(MOE_GEMM_SWIGLU_Q))
    def _gemm_swiglu_q(x, sorted_pairs, block_experts, num_padded, codes, scales, **attrs):
        return gemm_swiglu_q(t(x), t(sorted_pairs), t(block_experts), t(num_padded), as_bytes(codes), t(scales),
                             *quant(attrs)).numpy()

    @onnx_op(op_type=MOE_GEMM_DOWN_Q.name, inputs=[f32, i32, i32, i32, f32, i32, f32], outputs=[f32],
             attrs=fields(MOE_GEMM_DOWN_Q))
    def _gemm_down_q(inter, sorted_pairs, block_experts, num_padded, weights, codes, scales, **attrs):
        return gemm_down_q(t(inter), t(sorted_pairs), t(block_experts), t(num_padded), t(weights), as_bytes(codes),
                           t(scales), *quant(attrs)).numpy()

    _REGISTERED = True
    return get_library_path()
