"""ONNX Runtime runner: CPU execution provider here, CUDA where onnxruntime-gpu and a GPU exist.

Every call goes through IO binding. The `present.*` outputs stay ONNX Runtime OrtValues on the session's
device and are bound as the next call's `past_key_values.*` as they are: the KV cache is never copied to
numpy and back between steps (on CUDA it never leaves the GPU). Only the other outputs (logits, debug
outputs) are copied out. What remains per step is the graph's own Concat of past and new keys/values.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.artifacts import confined_name
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import MANIFEST_FILE, Manifest
from mixtral_trt.common.ort_versions import check_engine_ops, check_ort_version

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


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> OrtRunner:
    """An engine whose QMoE nodes the CUDA EP cannot run (its manifest says why: exporter/lowering/ort_cuda.py)
    runs wholly on the CPU EP under "auto", and is refused under "cuda", rather than having ONNX Runtime move
    those nodes to the CPU (or run them wrong) on its own."""
    unsupported = manifest.backend_info.get("cuda_unsupported")
    if unsupported and device == "cuda":
        raise MixtralTrtError(f"{directory}: ONNX Runtime's CUDA EP cannot run this engine's QMoE nodes "
                              f"({'; '.join(unsupported)}): open it with device='cpu'")
    return OrtRunner(directory / manifest.model_file, device="cpu" if unsupported else device,
                     session_options_hook=custom_ops_hook(manifest, directory))


def custom_ops_hook(manifest: Manifest, directory: Path, then=None):
    """A session-options hook registering the engine's copy of our CPU kernels' library (exporter/
    cpu_kernels_build.py) where its manifest names one, then calling `then`; `then` itself otherwise."""
    library = manifest.backend_info.get("cpu_kernels", {}).get("library")
    if not library:
        return then
    source = f"{directory / MANIFEST_FILE}"
    path = confined_name(directory, library, source, "backend_info.cpu_kernels.library")
    if library not in manifest.artifacts:  # loaded code must be hashed: Manifest.verify checks every artifact
        raise MixtralTrtError(f"{source}: backend_info.cpu_kernels.library {library!r} is not among the artifacts")
    if not path.is_file():
        raise MixtralTrtError(f"{directory}: its MoE layers need our CPU kernels' library {library}, missing: "
                              "rebuild the engine with the library built (make cpu-kernels) or --cpu-kernels ort")

    def hook(so) -> None:
        so.register_custom_ops_library(str(path))
        if then is not None:
            then(so)

    return hook


class OrtRunner:
    def __init__(self, model_path: Path, device: str = "auto", threads: int | None = None,
                 session_options_hook=None) -> None:
        import onnxruntime as ort

        check_ort_version(ort.__version__)
        providers = providers_for(device)
        check_engine_ops(model_path, ort.__version__, cuda=providers[0] == "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(model_path), session_options(threads, session_options_hook),
                                                providers=providers)
        except Exception as e:  # ORT raises its own exception types (Fail, NotImplemented, ...)
            raise MixtralTrtError(f"{model_path}: ONNX Runtime cannot open the engine "
                                  f"({' '.join(str(e).split())[:300]})") from None
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        # the inputs a feed may name: the required ones and the overridable initializers (logits_to_keep), which
        # an IO binding takes as OrtValues only
        self._overridable = {i.name for i in self.session.get_overridable_initializers()}
        self.input_names = {i.name for i in self.session.get_inputs()} | self._overridable
        self._ort_value = ort.OrtValue
        self._lock = threading.Lock()
        self._binding = None  # the kept IO binding of calls whose every output is given (run)
        self._bound_names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self._bound: dict[str, Any] = {}  # name (output: "->" + name) -> the OrtValue bound; None: an array

    def run(self, feeds: dict[str, Any], output_names: list[str],
            output_values: dict[str, Any] | None = None) -> dict[str, Any]:
        """numpy or OrtValue feeds -> outputs; `present.*` come back as OrtValues (the next call's past).

        `output_values` binds outputs to existing OrtValues, written in place: a GroupQueryAttention engine's
        shared KV buffers, fed as the past and bound as the present (runtime/gqa_cache.py), and its logits
        buffer. Such outputs come back as the OrtValues given. When every output is given, the runner keeps
        one IO binding between calls and rebinds only what changed (the step's ids and mask; the cache's
        buffers when they grew): a decode step binds 3 names instead of every layer's past and present."""
        output_values = output_values or {}
        if not self._overridable.isdisjoint(feeds):  # a prefill's logits_to_keep; decode steps skip this
            feeds = {n: self._ort_value.ortvalue_from_numpy(np.ascontiguousarray(v))
                     if n in self._overridable and not isinstance(v, self._ort_value) else v for n, v in feeds.items()}
        if all(n in output_values for n in output_names) and self._lock.acquire(blocking=False):
            try:  # one caller at a time keeps the persistent binding; a concurrent one takes a fresh one
                return self._run_kept(feeds, output_names, output_values)
            finally:
                self._lock.release()
        binding = self.session.io_binding()
        keep = []  # arrays the binding points into, alive until the run returns
        for name, value in feeds.items():
            if name not in self.input_names:
                continue
            if isinstance(value, self._ort_value):
                binding.bind_ortvalue_input(name, value)
            else:
                keep.append(np.ascontiguousarray(value))
                binding.bind_cpu_input(name, keep[-1])
        for name in output_names:
            if name in output_values:
                binding.bind_ortvalue_output(name, output_values[name])
            else:
                binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        out = {}
        for name, value in zip(output_names, values, strict=True):
            if name in output_values:
                out[name] = output_values[name]
            else:
                out[name] = value if name.startswith("present.") else value.numpy()
        return out

    def _run_kept(self, feeds: dict[str, Any], output_names: list[str],
                  output_values: dict[str, Any]) -> dict[str, Any]:
        """`run` through the kept binding; every output is bound to a given OrtValue."""
        names = (tuple(n for n in feeds if n in self.input_names), tuple(output_names))
        if self._binding is None or names != self._bound_names:  # another set of names: bind all afresh
            self._binding, self._bound_names, self._bound = self.session.io_binding(), names, {}
        binding, bound = self._binding, self._bound
        for name in names[0]:
            value = feeds[name]
            if isinstance(value, self._ort_value):
                if bound.get(name) is not value:
                    binding.bind_ortvalue_input(name, value)
                    bound[name] = value
            else:  # the binding keeps a reference to the array until it is rebound
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
                bound[name] = None
        for name in output_names:
            value = output_values[name]
            if bound.get("->" + name) is not value:
                binding.bind_ortvalue_output(name, value)
                bound["->" + name] = value
        self.session.run_with_iobinding(binding)
        return {n: output_values[n] for n in output_names}
