"""The plugin nodes as ONNX Runtime Python ops (onnxruntime-extensions `PyOp`, domain ai.onnx.contrib):
each runs the plugin's own Triton kernel under the interpreter, so ONNX Runtime executes the `trt`-lowered
graph on CPU with exactly the kernels TensorRT runs on the GPU. float32 activations (one dtype per op).
Each op is its plugin folder's cpu.py.
"""

from __future__ import annotations

from . import PLUGINS
from .interpreter import require_interpreter

_REGISTERED = False


def register_cpu_ops() -> str:
    """Register the op of every plugin once per process; returns the custom-op library path for SessionOptions."""
    global _REGISTERED
    require_interpreter()
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    if _REGISTERED:
        return get_library_path()
    for spec in PLUGINS.values():
        spec.module("cpu").register(onnx_op, PyCustomOpDef)
    _REGISTERED = True
    return get_library_path()
