"""What `build --cpu-kernels ours|ort` decides for an ONNX Runtime engine, and the library copy it ships.

Our library (plugins/cpu_kernels) is the default for ONNX Runtime engines built for the CPU (`--genai-provider
cpu`, single-rank exports) wherever it is built and runs every MoE layer of the export; `ours` asked for where it
is not built, or where a layer cannot use it, is a one-line error. The engine carries a copy of the library
(`cpu_kernels.so`, hashed in the manifest like every artifact, registered by runtime.load and named in
genai_config.json), so it runs wherever it is copied; backend_info["cpu_kernels"] records the file, its sha256,
the ops used and the instruction set the build machine's kernels use.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.plugins import cpu_kernels

if TYPE_CHECKING:
    import onnx_ir as ir

    from mixtral_trt.common.contract import GraphContract

CHOICES = ("ours", "ort")
ENGINE_LIBRARY = "cpu_kernels.so"  # the copy in the engine directory


def choose(requested: str | None, expert_dtype: str | None, model: ir.Model, contract: GraphContract,
           genai_provider: str, experts: str | None) -> tuple[str, dict]:
    """("ours" | "ort", lowering options) for an `ort`-lowered build."""
    from .lowering.common import moe_pairs
    from .lowering.ort_cpu_kernels import EXPERT_DTYPES, unsupported

    if requested is not None and requested not in CHOICES:
        raise MixtralTrtError(f"--cpu-kernels {requested!r}: choose one of {', '.join(CHOICES)}")
    if expert_dtype is not None and expert_dtype not in EXPERT_DTYPES:
        raise MixtralTrtError(f"--expert-dtype {expert_dtype!r}: choose one of {', '.join(EXPERT_DTYPES)}")
    reasons = [f"{p.experts.name}: {why}" for p in moe_pairs(model.graph) if (why := unsupported(p))]
    if requested is None:
        wanted = expert_dtype == "bf16"
        usable = cpu_kernels.library_path() is not None and genai_provider == "cpu" and not reasons
        requested = "ours" if (wanted or (usable and experts is None)) else "ort"
    if requested == "ort":
        if expert_dtype == "bf16":
            raise MixtralTrtError("--expert-dtype bf16 runs through our CPU kernels only: "
                                  "build with --cpu-kernels ours")
        return "ort", {}
    if experts is not None:
        raise MixtralTrtError("--experts chooses among ONNX Runtime's kernels: give it with --cpu-kernels ort")
    if cpu_kernels.library_path() is None:
        raise MixtralTrtError(f"--cpu-kernels ours: the cpu_kernels library is not built: {cpu_kernels.BUILD_HINT}")
    if reasons:
        raise MixtralTrtError(f"--cpu-kernels ours: {reasons[0]} (build with --cpu-kernels ort)")
    quantized = bool(contract.extra.get("quantization"))
    if expert_dtype == "bf16" and (contract.dtype != "fp32" or quantized):
        raise MixtralTrtError(f"--expert-dtype bf16 takes a float fp32 export (experts rounded to bf16 at build); "
                              f"this one is {contract.dtype}" + (" quantized" if quantized else ""))
    return "ours", {"cpu_kernels": "ours", "expert_dtype": expert_dtype or "fp32"}


def ops_used(contract: GraphContract, expert_dtype: str) -> list[str]:
    """The library's ops an engine of this export uses (ort_cpu_kernels.cpu_moe_node's choice)."""
    if contract.extra.get("quantization"):
        return ["MoEQ"]
    return ["MoEBF16" if expert_dtype == "bf16" else "MoE"]


def ship_library(engine_dir: Path, ops: list[str]) -> dict:
    """Copy the library into the engine directory; the manifest's backend_info["cpu_kernels"]."""
    library = cpu_kernels.require_library()
    shutil.copyfile(library, engine_dir / ENGINE_LIBRARY)
    return {"library": ENGINE_LIBRARY, "sha256": cpu_kernels.sha256_of(library), "isa": cpu_kernels.isa(library),
            "supported_isas": cpu_kernels.supported_isas(library), "domain": cpu_kernels.DOMAIN, "ops": ops}
