"""TensorRT runner: deserialise the plan, bind device buffers by name, `execute_async_v3` on a stream.

Needs TensorRT and a CUDA GPU (device memory through torch's CUDA allocator). The KV cache never leaves
the device: `present.*` outputs are returned as CUDA tensors and fed back as the next `past_key_values.*`
without a copy; only logits (and debug outputs) come back to the host. Not executable on a machine
without a GPU; its checks are covered by `gpu`-marked tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.backends import get_backend
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest

DECODE_PROFILE, PREFILL_PROFILE = 0, 1


def check_trt_compatibility(manifest: Manifest, trt_version: str, compute_capability: str | None) -> None:
    """A plan runs only on the TensorRT version and GPU architecture it was built for."""
    info = manifest.backend_info
    built = info.get("tensorrt")
    if built and built != trt_version:
        raise MixtralTrtError(f"engine plan was built with TensorRT {built}, this is TensorRT {trt_version}: "
                              "rebuild the engine (mixtral-export build --backend trt)")
    built_cc = info.get("compute_capability")
    if built_cc and compute_capability and built_cc != compute_capability:
        raise MixtralTrtError(f"engine plan was built for compute capability {built_cc}, this GPU is "
                              f"{compute_capability}: rebuild the engine on this GPU")


def open_runner(manifest: Manifest, directory: Path, device: str = "auto") -> TrtRunner:
    """TensorRT plans always run on the CUDA device (`device` is for ONNX Runtime engines)."""
    return TrtRunner(directory, manifest)


class TrtRunner:
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError:
            raise MixtralTrtError(f"{directory}: a TensorRT engine needs tensorrt and a CUDA build of torch "
                                  "(pip install 'mixtral-trt[gpu]')") from None
        if not torch.cuda.is_available():
            raise MixtralTrtError(f"{directory}: a TensorRT engine needs a CUDA GPU, and none is visible")
        major, minor = torch.cuda.get_device_capability()
        check_trt_compatibility(manifest, trt.__version__, f"{major}.{minor}")
        if get_backend(manifest.backend, "backend").plugin_nodes:
            # the AOT kernels are in the plan; registering checks this TensorRT and serves any JIT fallback
            from mixtral_trt.plugins.trt_registry import register_plugins

            register_plugins()
        self._torch, self._trt = torch, trt
        self.device = "cuda"
        self.logger = trt.Logger(trt.Logger.WARNING)
        plan = (directory / manifest.model_file).read_bytes()
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise MixtralTrtError(f"{directory / manifest.model_file}: TensorRT could not deserialize the plan")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.decode_max_seq = int(manifest.backend_info.get("decode_max_seq", 8))
        self.profile = -1
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _torch_dtype(self, name: str) -> Any:
        trt, torch = self._trt, self._torch
        return {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                trt.int64: torch.int64, trt.int32: torch.int32}[self.engine.get_tensor_dtype(name)]

    def _device(self, name: str, value: Any) -> Any:
        torch = self._torch
        if isinstance(value, torch.Tensor):
            return value.to("cuda", self._torch_dtype(name), non_blocking=True).contiguous()
        if value.dtype.name == "bfloat16":  # ml_dtypes on the host
            return torch.from_numpy(value.view(np.uint16)).view(torch.bfloat16).to("cuda")
        return torch.from_numpy(np.ascontiguousarray(value)).to("cuda", self._torch_dtype(name), non_blocking=True)

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> dict[str, Any]:
        torch = self._torch
        seq = feeds["input_ids"].shape[1]
        profile = DECODE_PROFILE if seq <= self.decode_max_seq else PREFILL_PROFILE
        with torch.cuda.stream(self.stream):
            if profile != self.profile:
                self.context.set_optimization_profile_async(profile, self.stream.cuda_stream)
                self.profile = profile
            bound = {}
            for name in self.inputs:
                tensor = self._device(name, feeds[name])
                bound[name] = tensor
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                bound[name] = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
                self.context.set_tensor_address(name, bound[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        self.stream.synchronize()
        missing = [n for n in output_names if n not in bound]
        if missing:
            raise MixtralTrtError(f"the engine has no output {missing[0]!r} (built without debug outputs?)")
        # The KV cache stays on the device; everything else comes back to the host.
        return {n: bound[n] if n.startswith("present.") else bound[n].float().cpu().numpy() for n in output_names}
