"""plugins-cpu runner: ONNX Runtime on CPU with the plugin nodes bound to the plugin kernels (Triton
interpreter) through onnxruntime-extensions — the CPU proof that the `trt` lowering, the plugin attributes and
the kernels agree. Slow by design: every kernel runs in the interpreter.

Triton decides between compiling and interpreting once per process, when it is first imported, and a process
that ran any torch custom op (the reference model, transformers) has imported it to compile. So the ONNX
Runtime session lives in a worker process started with TRITON_INTERPRET=1 (plugins_cpu_worker.py): feeds and
outputs cross two pipes as the tensor-parallel ranks' messages (runtime/distributed/wire.py: a JSON header and
raw array bytes, no pickle), the KV cache included. The worker ends with the runner (`close()`, garbage
collection, or this process's exit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest

from ..distributed.wire import decode, encode

WORKER = "mixtral_trt.runtime.backends.plugins_cpu_worker"


def _stop(proc: subprocess.Popen, to_worker: Connection, from_worker: Connection) -> None:
    """End of input: the worker returns; kill it if it does not within 10 s."""
    to_worker.close()
    from_worker.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class PluginsCpuRunner:
    device = "cpu"

    def __init__(self, model_path: Path) -> None:
        to_worker, from_worker = os.pipe(), os.pipe()  # (read fd, write fd) each
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
        command = [sys.executable, "-m", WORKER, str(model_path), str(to_worker[0]), str(from_worker[1])]
        try:
            self._proc = subprocess.Popen(command, env=env, pass_fds=(to_worker[0], from_worker[1]))
        finally:
            os.close(to_worker[0])
            os.close(from_worker[1])
        self._to = Connection(to_worker[1], readable=False)
        self._from = Connection(from_worker[0], writable=False)
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._to, self._from)
        try:
            self._reply()  # "ready", or why the worker could not open the engine
        except BaseException:
            self.close()
            raise

    def _reply(self) -> dict[str, np.ndarray]:
        try:
            header, arrays = decode(bytearray(self._from.recv_bytes()))  # bytearray: writable arrays
        except EOFError:
            raise MixtralTrtError(f"the plugins-cpu worker process exited (code {self._proc.wait()})") from None
        if "error" in header:
            if header.get("user_error"):
                raise MixtralTrtError(header["error"])
            raise RuntimeError(f"plugins-cpu worker: {header['error']}")
        return arrays

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> dict[str, np.ndarray]:
        if not self._finalizer.alive:
            raise MixtralTrtError("the plugins-cpu engine was closed")
        try:
            self._to.send_bytes(encode({"outputs": list(output_names)}, {k: np.asarray(v) for k, v in feeds.items()}))
        except BrokenPipeError:
            raise MixtralTrtError(f"the plugins-cpu worker process exited (code {self._proc.wait()})") from None
        return self._reply()

    def close(self) -> None:
        self._finalizer()


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> PluginsCpuRunner:
    """ONNX Runtime on CPU (whatever `device` asks: the kernels run in Triton's interpreter), in a worker."""
    return PluginsCpuRunner(directory / manifest.model_file)
