"""ONNX Runtime runner: CPU execution provider here, CUDA where onnxruntime-gpu and a GPU exist."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mixtral_trt.mixtral_ref.errors import MixtralTrtError

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device not in DEVICES:
        raise MixtralTrtError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise MixtralTrtError("device 'cuda': this onnxruntime has no CUDAExecutionProvider "
                              "(install onnxruntime-gpu in place of onnxruntime)")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None, session_options_hook=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or int(os.environ.get("MIXTRAL_TRT_THREADS", "0")) or (os.cpu_count() or 1)
    so.log_severity_level = 3
    if session_options_hook is not None:
        session_options_hook(so)
    return so


class OrtRunner:
    def __init__(self, model_path: Path, device: str = "auto", threads: int | None = None,
                 session_options_hook=None) -> None:
        import onnxruntime as ort

        providers = providers_for(device)
        try:
            self.session = ort.InferenceSession(str(model_path), session_options(threads, session_options_hook),
                                                providers=providers)
        except Exception as e:  # ORT raises its own exception types (Fail, NotImplemented, ...)
            raise MixtralTrtError(f"{model_path}: ONNX Runtime cannot open the engine "
                                  f"({' '.join(str(e).split())[:300]})") from None
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.input_names = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        return dict(zip(output_names, self.session.run(output_names, feeds), strict=True))
