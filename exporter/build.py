"""`build`: canonical ONNX -> engine directory (lowered model + manifest.json) for one backend.

Which lowering a backend applies, whether it builds a TensorRT plan and which dtypes it takes come from
the backend table (common/backends.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mixtral_trt.chat.tokenizer import tokenizer_file
from mixtral_trt.common.backends import get_backend
from mixtral_trt.common.contract import KV_CACHE_KINDS, MODEL_FILE, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir, check_output
from mixtral_trt.common.manifest import Manifest
from mixtral_trt.common.progress import step
from mixtral_trt.common.tensor_parallel import RANK_DIR

from .cpu_kernels_build import choose, ops_used, ship_library
from .genai_config import PROVIDERS, write_genai_config
from .lowered import kernel_info, lower_and_save, tool_versions
from .lowering.ort_cuda import qmoe_cuda_problems
from .side_files import copy_side_files, read_generation_config

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.progress import Progress


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


def ort_cuda_info(onnx_dir: Path, contract: GraphContract) -> dict:
    """For the `ort` lowering: what ONNX Runtime's CUDA EP cannot run of it (lowering/ort_cuda.py), recorded in the
    manifest (runtime.load then keeps the engine off CUDA); an error at build time when this machine's
    onnxruntime has the CUDA EP, i.e. when the engine is built for CUDA."""
    problems = qmoe_cuda_problems(contract)
    if not problems:
        return {}
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        raise MixtralTrtError(f"{onnx_dir}: ONNX Runtime's CUDA QMoE cannot run this export: {'; '.join(problems)} "
                              "(export fp16 or bf16, or build with the CPU onnxruntime for a CPU engine)")
    return {"cuda_unsupported": problems}


def check_kv_cache(kv_cache: str, backend: str, onnx_dir: Path) -> None:
    """Refuse a cache kind the backend cannot keep, before any work (contract.py KV_CACHE_KINDS)."""
    if kv_cache not in KV_CACHE_KINDS:
        raise MixtralTrtError(f"--kv-cache {kv_cache!r}: choose one of {', '.join(KV_CACHE_KINDS)}")
    if kv_cache == "float":
        return
    spec = get_backend(backend)
    if spec.tensorrt:
        raise MixtralTrtError(f"--kv-cache int8 applies to ONNX Runtime engines (ort, portable), not --backend "
                              f"{backend}: TensorRT engines keep a float cache (the FP8 KV design: docs/GPU.md)")
    if spec.attention == "gqa":
        raise MixtralTrtError("--kv-cache int8 is not supported with --backend ort-gqa: onnxruntime's "
                              "GroupQueryAttention quantizes its cache with fixed per-tensor or per-channel scales "
                              "(k_scale / v_scale inputs), not per-token ones; use --backend ort")
    if spec.runner != "ort":
        raise MixtralTrtError(f"--kv-cache int8 applies to ONNX Runtime engines (ort, portable), not --backend "
                              f"{backend}")
    if (onnx_dir / RANK_DIR.format(rank=0)).is_dir():
        raise MixtralTrtError(f"{onnx_dir}: a tensor-parallel export; --kv-cache int8 is not supported for its "
                              "rank engines (their caches live in the rank processes)")


def build_engine(
    onnx_dir: str | Path,
    engine_dir: str | Path,
    backend: str = "ort",
    overwrite: bool = False,
    progress: Progress | None = None,
    genai_provider: str = "cpu",
    experts: str | None = None,
    cpu_kernels: str | None = None,
    expert_dtype: str | None = None,
    cpu_linears: str | None = None,
    kv_cache: str = "float",
    ragged: bool = False,
    **trt_options,
) -> Path:
    """Build an engine directory from an export directory (atomic: nothing is left behind on failure).

    ONNX Runtime engines get a genai_config.json (onnxruntime-genai opens the directory as it is) whose
    execution provider is `genai_provider` (cpu | cuda). `experts` (matmul | moe) is how the `ort` lowering
    runs the experts; by default per-expert MatMuls for fp32 CPU engines, the MoE / QMoE ops otherwise
    (lowering/ort.py, expert_form). `cpu_kernels` (ours | ort): the MoE layers as nodes of our CPU kernels'
    library (default where it is built, for CPU engines: cpu_kernels_build.py) or ONNX Runtime's own kernels;
    `expert_dtype` "bf16" stores an fp32 export's experts in bf16 (ours only; the float LM head and projections our
    ops run too). `cpu_linears`: which linears run on our ops (lm_head, projections, comma-separated, or none;
    cpu_kernels_build.py). `kv_cache` "int8": the cache as
    int8 codes + per-token scales (lowering/kv_int8.py; ort and portable; no genai_config.json, whose decoder
    knows no scale tensors). `ragged`: each query's visible keys as a graph input (lowering/ragged.py; `ort` only,
    no genai_config.json either: onnxruntime-genai feeds no such input), attended by our kernels' RaggedAttention
    where the build uses ours and a float cache (lowering/ragged_attention.py; backend_info["ragged_attention"]).
    `trt_options` (max_prefill, timing_cache, workspace_gib, debug_outputs) go to the TensorRT build and are
    refused for other backends."""
    spec = get_backend(backend)
    if genai_provider not in PROVIDERS:
        raise MixtralTrtError(f"--genai-provider {genai_provider!r}: choose one of {', '.join(PROVIDERS)}")
    if trt_options and not spec.tensorrt:
        option = "--" + next(iter(trt_options)).replace("_", "-")
        raise MixtralTrtError(f"{option} applies to TensorRT backends only, not --backend {backend}")
    for option, value in (("--experts", experts), ("--cpu-kernels", cpu_kernels), ("--expert-dtype", expert_dtype),
                          ("--cpu-linears", cpu_linears)):
        if value is not None and spec.lowering != "ort":
            raise MixtralTrtError(f"{option} applies to the ONNX Runtime backends (ort, ort-gqa), "
                                  f"not --backend {backend}")
    check_kv_cache(kv_cache, backend, Path(onnx_dir))
    if ragged and (spec.lowering != "ort" or spec.attention != "concat"):
        raise MixtralTrtError(f"--ragged applies to --backend ort (the canonical attention), not --backend {backend}")
    if spec.tensorrt:
        from .trt_build import build_trt_engine, import_tensorrt

        import_tensorrt()  # fail fast, before any work, where TensorRT is absent
    check_output(engine_dir, [onnx_dir], overwrite)
    if (Path(onnx_dir) / RANK_DIR.format(rank=0)).is_dir():  # a tensor-parallel export: one engine per rank
        if ragged:
            raise MixtralTrtError(f"{onnx_dir}: a tensor-parallel export; --ragged is not supported for its rank "
                                  "engines")
        if experts is not None or cpu_kernels == "ours" or expert_dtype is not None or cpu_linears is not None:
            raise MixtralTrtError(f"{onnx_dir}: a tensor-parallel export; its ranks' experts are lowered to the MoE "
                                  "op, without --experts, --cpu-kernels ours or --expert-dtype")
        from .shard.build import build_sharded_engine

        return build_sharded_engine(Path(onnx_dir), engine_dir, spec, GraphContract.load(onnx_dir), overwrite,
                                    progress, **trt_options)
    model, contract = load_canonical(onnx_dir)
    tokenizer_file(onnx_dir, contract.config.vocab_size)
    if contract.dtype not in spec.dtypes:
        raise MixtralTrtError(f"--backend {backend} builds {'/'.join(spec.dtypes)} exports; {onnx_dir} is "
                              f"{contract.dtype}" + (" (ONNX Runtime's Python ops have one dtype per op; the "
                              "kernels' fp16/bf16 paths are verified by tests/plugins)" if spec.plugin_nodes else ""))
    if spec.attention == "gqa":
        from .lowering.gqa import check_gqa

        check_gqa(contract)
    options, info, ours = {}, {}, False
    if spec.lowering == "ort":
        from .lowering.ort import expert_form

        kernels, cpu_options = choose(cpu_kernels, expert_dtype, model, contract, genai_provider, experts,
                                      cpu_linears)
        ours = kernels == "ours"
        options = {"experts": expert_form(contract, genai_provider, experts), **cpu_options}
        info = {"experts": "cpu_kernels" if ours else options["experts"]}
        if ours and cpu_options["expert_dtype"] == "bf16":
            info["expert_weights"] = "bf16"
            if cpu_options["cpu_linears"]:  # the float linears our ops run, stored in bf16 as well
                info["linear_weights"] = "bf16"
        if options["experts"] == "moe" and not ours:
            info.update(ort_cuda_info(Path(onnx_dir), contract))
    with atomic_dir(engine_dir, overwrite, [onnx_dir]) as tmp:
        lower_and_save(model, spec, tmp, progress, contract, kv_cache=kv_cache, ragged=ragged, **options)
        if spec.attention == "gqa":
            contract = contract.with_gqa_attention()
        if kv_cache == "int8":
            contract = contract.with_int8_kv()
        if ragged:
            contract = contract.with_ragged_attention()
        copy_side_files(onnx_dir, tmp)
        if ragged:
            from .lowering.ragged_attention import attention_form

            info["ragged_attention"] = attention_form(kv_cache, ours)
        if ours:
            info["cpu_kernels"] = ship_library(tmp, ops_used(tmp / MODEL_FILE), options["cpu_linears"])
        model_file = MODEL_FILE
        info = {**info, **kernel_info(spec.lowering, contract)}
        if spec.tensorrt:
            model_file, info = build_trt_engine(tmp, contract, spec.plugin_nodes, progress=progress, **trt_options)
        if spec.genai and contract.kv_cache == "float" and not ragged:
            write_genai_config(tmp, contract, model_file, read_generation_config(onnx_dir), genai_provider,
                               info["cpu_kernels"]["library"] if ours else None)
            info = {**info, "genai_provider": genai_provider}
        with step(progress, "hash artifacts, write manifest.json"):
            Manifest.for_directory(tmp, backend, contract, model_file, tool_versions(*spec.tools),
                                   backend_info=info).save(tmp)
    return Path(engine_dir)
