"""plugins-cpu runner: ONNX Runtime on CPU with the plugin nodes bound to the plugin kernels (Triton
interpreter) through onnxruntime-extensions — the CPU proof that the `trt` lowering, the plugin
attributes and the kernels agree. Slow by design: every kernel runs in the interpreter."""

from __future__ import annotations

from pathlib import Path

from .ort import OrtRunner


def open_plugins_cpu_runner(model_path: Path) -> OrtRunner:
    from mixtral_trt.plugins.cpu_ops import register_cpu_ops

    library = register_cpu_ops()
    return OrtRunner(model_path, device="cpu",
                     session_options_hook=lambda so: so.register_custom_ops_library(library))
