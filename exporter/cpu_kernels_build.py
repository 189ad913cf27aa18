"""What `build --cpu-kernels ours|ort` decides for an ONNX Runtime engine, and the library copy it ships.

Our library (plugins/cpu_kernels) is the default for ONNX Runtime engines built for the CPU (`--genai-provider
cpu`, single-rank exports) wherever it is built and runs every MoE layer of the export; `ours` asked for where it
is not built, or where a layer cannot use it, is a one-line error. The engine carries a copy of the library
(`cpu_kernels.so`, hashed in the manifest like every artifact, registered by runtime.load and named in
genai_config.json), so it runs wherever it is copied; backend_info["cpu_kernels"] records the file, its sha256,
the ops used, the linears lowered to ours and the instruction set the build machine's kernels use.

`--cpu-linears` picks which linears run on our ops too (ort_cpu_kernels.lower_linears_ours): `lm_head`,
`projections` (the attention projections), both comma-separated, or `none`. The default per weight format,
DEFAULT_LINEARS, is what measured faster than ONNX Runtime's MatMul / MatMulNBits on `small`
(docs/ARCHITECTURE.md has the figures).
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
NO_LINEARS = "none"
# per weight format of the dense linears (a quantized export's LinearQ; float fp32; float stored in bf16 with
# --expert-dtype bf16): the linears our ops run by default. Measured on `small` (docs/BENCHMARKS.md, "Our linears
# by default"): since the kernels read a pass's weight rows as separate streams (and the few-row int8 / int4
# tiles), LinearQ beats MatMulNBits in whole engines at batch 1, batch 8 and prefill 512 (int8 decode 1.13-1.17x,
# prefill 1.24-1.27x; int4 1.06-1.07x, 1.24x), with the same int8-activation semantics; bf16 always did
# (LinearBF16 reads half the bytes of ONNX Runtime's fp32 MatMul). fp32 keeps ONNX Runtime's MatMul: ours decoded
# 1.04-1.13x faster, but its calls of 16+ rows run on AMX tiles of bf16 parts (kernels_amx.cc, ~1e-5 a product),
# which put an fp32 engine's prefill logits 10x further from the reference (8.0e-6 against 7.6e-7) and moved its
# int8 KV cache's rounding enough to fail parity (8.8e-4 against 1e-4); `--cpu-linears` asks for them.
DEFAULT_LINEARS: dict[str, tuple[str, ...]] = {"quantized": ("lm_head", "projections"), "fp32": (),
                                               "bf16": ("lm_head", "projections")}


def linears_format(contract: GraphContract, expert_dtype: str | None) -> str:
    """The dense linears' weight format as our ops would run them: "quantized" | "fp32" | "bf16"."""
    if (contract.extra.get("quantization") or {}).get("dense"):
        return "quantized"
    return "bf16" if expert_dtype == "bf16" else "fp32"


def parse_linears(requested: str | None, fmt: str) -> tuple[str, ...]:
    """`--cpu-linears` (comma-separated LINEAR_KINDS, or "none"; None: DEFAULT_LINEARS[fmt]) -> kinds."""
    from .lowering.ort_cpu_kernels import LINEAR_KINDS

    if requested is None:
        return DEFAULT_LINEARS[fmt]
    if requested.strip() == NO_LINEARS:
        return ()
    kinds = tuple(k.strip() for k in requested.split(","))
    wrong = [k for k in kinds if k not in LINEAR_KINDS]
    if wrong or not kinds:
        raise MixtralTrtError(f"--cpu-linears {requested!r}: comma-separated {', '.join(LINEAR_KINDS)}, or "
                              f"{NO_LINEARS}")
    return tuple(k for k in LINEAR_KINDS if k in kinds)


def choose(requested: str | None, expert_dtype: str | None, model: ir.Model, contract: GraphContract,
           genai_provider: str, experts: str | None, linears: str | None = None) -> tuple[str, dict]:
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
        if linears is not None:
            raise MixtralTrtError("--cpu-linears chooses among our CPU kernels' linears: give it with "
                                  "--cpu-kernels ours")
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
    fmt = linears_format(contract, expert_dtype)
    kinds = parse_linears(linears, fmt)
    return "ours", {"cpu_kernels": "ours", "expert_dtype": expert_dtype or "fp32", "cpu_linears": kinds,
                    "linear_dtype": "bf16" if fmt == "bf16" else "fp32"}


def ops_used(model_file: Path) -> list[str]:
    """The library's ops the lowered model's nodes use, sorted (its graph only: the weights are not read)."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    return sorted({n.op_type for n in model.graph.node if n.domain == cpu_kernels.DOMAIN})


def ship_library(engine_dir: Path, ops: list[str], linears: tuple[str, ...] = ()) -> dict:
    """Copy the library into the engine directory; the manifest's backend_info["cpu_kernels"]."""
    library = cpu_kernels.require_library()
    shutil.copyfile(library, engine_dir / ENGINE_LIBRARY)
    return {"library": ENGINE_LIBRARY, "sha256": cpu_kernels.sha256_of(library), "isa": cpu_kernels.isa(library),
            "supported_isas": cpu_kernels.supported_isas(library), "domain": cpu_kernels.DOMAIN, "ops": ops,
            "linears": list(linears)}
