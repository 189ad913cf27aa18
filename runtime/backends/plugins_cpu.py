"""plugins-cpu runner: ONNX Runtime on CPU with the plugin nodes bound to the plugin kernels (Triton
interpreter) through onnxruntime-extensions — the CPU proof that the `trt` lowering, the plugin
attributes and the kernels agree. Slow by design: every kernel runs in the interpreter."""

from __future__ import annotations

from pathlib import Path

from mixtral_trt.common.manifest import Manifest

from .ort import OrtRunner


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> OrtRunner:
    """ONNX Runtime on CPU (whatever `device` asks: the kernels run in Triton's interpreter)."""
    from mixtral_trt.plugins.cpu_ops import register_cpu_ops

    library = register_cpu_ops()
    return OrtRunner(directory / manifest.model_file, device="cpu",
                     session_options_hook=lambda so: so.register_custom_ops_library(library))
