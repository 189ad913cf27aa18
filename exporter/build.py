"""`build`: canonical ONNX -> engine directory (lowered model + manifest.json) for one backend.

| backend     | lowering  | runs on                                                         |
|-------------|-----------|-----------------------------------------------------------------|
| ort         | ort       | ONNX Runtime, com.microsoft::MoE (CPU EP; CUDA EP with onnxruntime-gpu) |
| portable    | portable  | any ONNX runtime (dense experts)                                |
| plugins-cpu | trt       | ONNX Runtime on CPU, plugin nodes run by the plugin kernels (Triton interpreter) |
| trt         | trt       | TensorRT plan with the plugins (CUDA GPU)                       |
| trt-dense   | portable  | TensorRT plan of the dense graph: the baseline the plugins beat |
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

from mixtral_trt.mixtral_ref.errors import MixtralTrtError
from mixtral_trt.mixtral_ref.fileio import atomic_dir
from mixtral_trt.mixtral_ref.progress import step

from .contract import MODEL_FILE, GraphContract

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.progress import Progress

LOWERING_OF = {"ort": "ort", "portable": "portable", "plugins-cpu": "trt", "trt": "trt", "trt-dense": "portable"}
TENSORRT_BACKENDS = ("trt", "trt-dense")
EXTERNAL_DATA = MODEL_FILE + ".data"


def tool_versions(*packages: str) -> dict[str, str]:
    names = ("mixtral-trt", "torch", "onnx", "onnx-ir", "onnxscript", "onnxruntime", *packages)
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def load_canonical(onnx_dir: str | Path) -> tuple[ir.Model, GraphContract]:
    import onnx_ir as ir

    onnx_dir = Path(onnx_dir)
    contract = GraphContract.load(onnx_dir)
    path = onnx_dir / MODEL_FILE
    if not path.is_file():
        raise MixtralTrtError(f"{path}: missing (the export directory is incomplete)")
    try:
        return ir.load(path), contract
    except Exception as e:  # protobuf decode errors come in many types
        raise MixtralTrtError(f"{path}: cannot be read as ONNX ({type(e).__name__}: {e})") from None


def lower_and_save(model: ir.Model, backend: str, out_dir: Path, progress: Progress | None = None) -> Path:
    """Apply the backend's lowering, fold constants, and save model.onnx + external data into out_dir."""
    import onnx_ir as ir
    import onnxscript.optimizer

    from .lowering import lower

    options = {}
    if backend == "plugins-cpu":
        from .lowering.trt import CPU_DOMAIN

        options["domain"] = CPU_DOMAIN
    with step(progress, f"lower for {backend} ({LOWERING_OF[backend]})"):
        model = lower(model, LOWERING_OF[backend], **options)
    with step(progress, "optimize (constant folding, dead code)"):
        onnxscript.optimizer.optimize_ir(model, num_iterations=2)
    with step(progress, "save lowered model"):
        ir.save(model, out_dir / MODEL_FILE, external_data=EXTERNAL_DATA)
    return out_dir / MODEL_FILE


def build_engine(
    onnx_dir: str | Path,
    engine_dir: str | Path,
    backend: str = "ort",
    overwrite: bool = False,
    progress: Progress | None = None,
    **trt_options,
) -> Path:
    """Build an engine directory from an export directory (atomic: nothing is left behind on failure)."""
    from mixtral_trt.mixtral_ref.tokenizer import copy_tokenizer
    from mixtral_trt.runtime.manifest import Manifest

    if backend not in LOWERING_OF:
        raise MixtralTrtError(f"--backend {backend!r}: choose one of {', '.join(LOWERING_OF)}")
    if backend in TENSORRT_BACKENDS:
        from .trt_build import build_trt_engine, import_tensorrt

        import_tensorrt()  # fail fast, before any work, where TensorRT is absent
    model, contract = load_canonical(onnx_dir)
    if backend == "plugins-cpu" and contract.dtype != "fp32":
        raise MixtralTrtError(f"--backend plugins-cpu runs fp32 exports (ONNX Runtime's Python ops have one "
                              f"dtype per op); {onnx_dir} is {contract.dtype}. The kernels' fp16/bf16 paths are "
                              "verified by tests/plugins.")
    with atomic_dir(engine_dir, overwrite) as tmp:
        lower_and_save(model, backend, tmp, progress)
        copy_tokenizer(onnx_dir, tmp)
        model_file, info, extra_tools = MODEL_FILE, {}, ()
        if backend in TENSORRT_BACKENDS:
            model_file, info = build_trt_engine(tmp, contract, progress=progress, **trt_options)
            extra_tools = ("tensorrt",)
        elif backend == "plugins-cpu":
            extra_tools = ("triton", "onnxruntime-extensions")
        with step(progress, "hash artifacts, write manifest.json"):
            Manifest.for_directory(tmp, backend, contract, model_file, tool_versions(*extra_tools),
                                   backend_info=info).save(tmp)
    return Path(engine_dir)
