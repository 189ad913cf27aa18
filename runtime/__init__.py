"""mixtral_trt.runtime: open an engine directory and run it.

    from mixtral_trt import runtime
    engine = runtime.load("engines/tiny-ort")
    logits = engine.logits(input_ids)          # [B, T] -> [B, T, V]
    new_tokens = engine.generate(prompt_ids, max_new_tokens=32)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine


def load(path: str | Path, device: str = "auto", verify: bool = True) -> Engine:
    """Open the engine directory `path` (written by `mixtral-export build`).

    `verify` checks every artifact's size and sha256 against manifest.json before anything is loaded.
    `device`: auto | cpu | cuda (ONNX Runtime engines; TensorRT engines always run on CUDA).
    """
    from .backends import open_runner
    from .engine import Engine
    from .manifest import Manifest

    path = Path(path)
    manifest = Manifest.load(path, verify=verify)
    return Engine(path, manifest, open_runner(manifest, path, device))


__all__ = ["load"]
