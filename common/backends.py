"""The backend table: every engine kind, what builds it and what runs it. Every stage reads this table
(build, the manifest check, the runtime's runner choice, the CLI's choices, the benchmark); adding a
backend is adding a row here, a lowering in exporter/lowering/ if it needs a new one, and a runner
module in runtime/backends/ (docs/ARCHITECTURE.md, "Adding a backend").
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from .errors import MixtralTrtError


@dataclass(frozen=True)
class Backend:
    name: str
    lowering: str  # module of exporter/lowering/ applied to the canonical graph
    runner: str  # module of runtime/backends/ whose `open_runner(manifest, directory, device)` runs the engine
    summary: str
    lowering_options: dict[str, str] = field(default_factory=dict)
    tensorrt: bool = False  # built into a TensorRT plan: needs TensorRT and a CUDA GPU
    plugin_nodes: bool = False  # the lowered graph holds the sparse-dispatch plugin nodes of plugins/
    dtypes: tuple[str, ...] = ("fp32", "fp16", "bf16")  # export dtypes it builds
    modules: tuple[str, ...] = ()  # Python modules it needs beyond the base install
    tools: tuple[str, ...] = ()  # distributions whose versions the manifest records beyond the base set
    tensor_parallel: bool = False  # builds `export --tensor-parallel N` exports: one engine per rank, run by
    #                                runtime/distributed (ONNX Runtime pieces + gloo on CPU, TensorRT + NCCL)
    attention: str = "concat"  # "gqa": also the GroupQueryAttention lowering, and its cache (contract.py)

    @property
    def genai(self) -> bool:
        """Whether build writes genai_config.json (onnxruntime-genai opens the engine directory as it is)."""
        return self.runner == "ort"

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this machine, or None."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        if self.tensorrt:
            try:
                import torch
            except ImportError:
                return "torch is not installed"
            if not torch.cuda.is_available():
                return "no CUDA GPU"
        return None


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("ort", "ort", "ort", "ONNX Runtime: float fp32 experts on the CPU as one MatMul pair per expert, "
            "otherwise one com.microsoft::MoE (or QMoE) node per layer (build --experts); CPU EP, CUDA EP with "
            "onnxruntime-gpu", tensor_parallel=True),
    Backend("ort-gqa", "ort", "ort", "as ort, and each layer's attention one com.microsoft::GroupQueryAttention "
            "(KV cache in a shared buffer written in place, rotary inside the op); head_dim a multiple of 16",
            attention="gqa", dtypes=("fp32", "fp16")),
    Backend("portable", "portable", "ort", "standard ONNX ops only (dense experts): any ONNX runtime",
            tensor_parallel=True),
    Backend("plugins-cpu", "trt", "plugins_cpu", "the sparse-dispatch plugin nodes run by the plugin kernels "
            "(Triton interpreter) inside ONNX Runtime on CPU: the CPU proof of the TensorRT graph",
            lowering_options={"domain": "ai.onnx.contrib"},  # onnxruntime-extensions' PyOp domain
            plugin_nodes=True, dtypes=("fp32",), modules=("triton", "onnxruntime_extensions"),
            tools=("triton", "onnxruntime-extensions")),
    Backend("trt", "trt", "trt", "TensorRT plan with the sparse-dispatch plugins (CUDA GPU)", tensorrt=True,
            plugin_nodes=True, modules=("tensorrt",), tools=("tensorrt",), tensor_parallel=True),
    Backend("trt-dense", "portable", "trt", "TensorRT plan of the dense graph: the baseline the plugins beat",
            tensorrt=True, modules=("tensorrt",), tools=("tensorrt",), tensor_parallel=True),
)}


def get_backend(name: str, what: str = "--backend") -> Backend:
    """The table row for `name`; a one-line error naming the choices otherwise."""
    if name not in BACKENDS:
        raise MixtralTrtError(f"{what} {name!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]
