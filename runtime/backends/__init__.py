"""Backend runners: one per engine kind, each a loader + a runner with the same small interface.

A runner maps the graph contract's input arrays to output arrays: `run(feeds, output_names) -> dict`.
Heavy libraries (onnxruntime, tensorrt, triton) are imported only when a runner is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from mixtral_trt.mixtral_ref.errors import MixtralTrtError

from ..manifest import Manifest


class Runner(Protocol):
    device: str

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]: ...


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> Runner:
    if manifest.backend in ("ort", "portable"):
        from .ort import OrtRunner

        return OrtRunner(directory / manifest.model_file, device=device)
    if manifest.backend == "plugins-cpu":
        from .plugins_cpu import open_plugins_cpu_runner

        return open_plugins_cpu_runner(directory / manifest.model_file)
    if manifest.backend in ("trt", "trt-dense"):
        from .trt import TrtRunner

        return TrtRunner(directory, manifest)
    raise MixtralTrtError(f"backend {manifest.backend!r} has no runner")
