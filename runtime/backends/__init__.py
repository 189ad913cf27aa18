"""Backend runners: one module per runner kind, named by the backend table (common/backends.py), each a
loader + a runner with the same small interface.

A runner maps the graph contract's input arrays to output arrays: `run(feeds, output_names) -> dict`.
Heavy libraries (onnxruntime, tensorrt, triton) are imported only when a runner is opened.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from mixtral_trt.common.backends import get_backend
from mixtral_trt.common.manifest import Manifest


class Runner(Protocol):
    device: str

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]: ...


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> Runner:
    """The runner the backend table names for the manifest's backend (a single-device engine; runtime.load
    opens tensor-parallel engines through runtime/distributed, whose ranks run these runners)."""
    module = importlib.import_module(f"{__name__}.{get_backend(manifest.backend, 'backend').runner}")
    return module.open_runner(manifest, directory, device)
