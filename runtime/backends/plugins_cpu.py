"""plugins-cpu runner: ONNX Runtime on CPU with the plugin nodes bound to the plugin kernels (Triton
interpreter) through onnxruntime-extensions — the CPU proof that the `trt` lowering, the plugin attributes and
the kernels agree. Slow by design: every kernel runs in the interpreter.

Triton decides between compiling and interpreting once per process, when it is first imported, and a process
that ran any torch custom op (the reference model, transformers) has imported it to compile. So the ONNX
Runtime session lives in a worker process started with TRITON_INTERPRET=1 (plugins_cpu_worker.py): feeds and
outputs cross two pipes as raw arrays (wire.py, no pickle), the KV cache included. The worker ends with the
runner (`close()`, garbage collection, or this process's exit).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest

from .wire import read_message, write_message

WORKER = "mixtral_trt.runtime.backends.plugins_cpu_worker"


def _stop(proc: subprocess.Popen, to_worker, from_worker) -> None:
    """End of input: the worker returns; kill it if it does not within 10 s."""
    for stream in (to_worker, from_worker):
        with contextlib.suppress(OSError):
            stream.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class PluginsCpuRunner:
    device = "cpu"

    def __init__(self, model_path: Path) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
        command = [sys.executable, "-m", WORKER, str(model_path), str(to_worker_r), str(from_worker_w)]
        try:
            self._proc = subprocess.Popen(command, env=env, pass_fds=(to_worker_r, from_worker_w))
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self._to, self._from = os.fdopen(to_worker_w, "wb"), os.fdopen(from_worker_r, "rb")
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._to, self._from)
        try:
            self._reply()  # "ready", or why the worker could not open the engine
        except BaseException:
            self.close()
            raise

    def _reply(self) -> dict[str, np.ndarray]:
        message = read_message(self._from)
        if message is None:
            raise MixtralTrtError(f"the plugins-cpu worker process exited (code {self._proc.wait()})")
        header, arrays = message
        if "error" in header:
            if header.get("user_error"):
                raise MixtralTrtError(header["error"])
            raise RuntimeError(f"plugins-cpu worker: {header['error']}")
        return arrays

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> dict[str, np.ndarray]:
        if not self._finalizer.alive:
            raise MixtralTrtError("the plugins-cpu engine was closed")
        try:
            write_message(self._to, {"outputs": list(output_names)}, {k: np.asarray(v) for k, v in feeds.items()})
        except BrokenPipeError:
            raise MixtralTrtError(f"the plugins-cpu worker process exited (code {self._proc.wait()})") from None
        return self._reply()

    def close(self) -> None:
        self._finalizer()


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> PluginsCpuRunner:
    """ONNX Runtime on CPU (whatever `device` asks: the kernels run in Triton's interpreter), in a worker."""
    return PluginsCpuRunner(directory / manifest.model_file)
