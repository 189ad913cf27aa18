"""`mixtral-export build ONNX_DIR ENGINE_DIR --backend ...`: lower, optimise, and write an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.backends import BACKENDS
from mixtral_trt.common.progress import make_progress

from .app import app

MAX_PREFILL_HELP = "TensorRT: tokens per call of the prefill profile (longer prompts are chunked); default " \
    "min(2048, max-seq)."


@app.command("build")
def build(
    onnx_dir: Annotated[Path, typer.Argument(help="Directory written by `mixtral-export export`.")],
    engine_dir: Annotated[Path, typer.Argument(help="Output engine directory.")],
    backend: Annotated[str, typer.Option(help=" | ".join(BACKENDS))] = "ort",
    force: Annotated[bool, typer.Option(help="Replace ENGINE_DIR if it exists.")] = False,
    max_prefill: Annotated[int | None, typer.Option(help=MAX_PREFILL_HELP)] = None,
    timing_cache: Annotated[Path | None, typer.Option(help="TensorRT: timing cache file.")] = None,
    debug_outputs: Annotated[bool, typer.Option(help="TensorRT: keep hidden/router outputs (for parity per "
                                                "layer; prevents some fusion).")] = False,
    genai_provider: Annotated[str, typer.Option(help="ONNX Runtime engines: the execution provider "
                                                "genai_config.json names for onnxruntime-genai: cpu | cuda.")] = "cpu",
    experts: Annotated[str | None, typer.Option(help="ONNX Runtime engines: matmul (one MatMul pair per expert, "
                                                "the fast form on CPU) | moe (com.microsoft::MoE / QMoE, the CUDA "
                                                "EP's); default: matmul for float fp32 experts with "
                                                "--genai-provider cpu.")] = None,
    cpu_kernels: Annotated[str | None, typer.Option(help="ONNX Runtime engines: ours (each MoE layer one node of "
                                                    "our CPU kernels' library, plugins/cpu_kernels) | ort (ONNX "
                                                    "Runtime's kernels); default: ours where the library is built, "
                                                    "for --genai-provider cpu.")] = None,
    expert_dtype: Annotated[str | None, typer.Option(help="With our CPU kernels: fp32 | bf16 (an fp32 export's "
                                                     "experts stored in bf16: half the bytes; so are the "
                                                     "float linears our kernels run).")] = None,
    cpu_linears: Annotated[str | None, typer.Option(help="With our CPU kernels: which linears run on them too: "
                                                    "lm_head, projections (comma-separated) or none; default: "
                                                    "those measured faster than ONNX Runtime's.")] = None,
    kv_cache: Annotated[str, typer.Option(help="ONNX Runtime engines (ort, portable): float (the graph dtype) | "
                                          "int8 (codes + a float32 scale per token and kv head: about half an "
                                          "fp16 cache's bytes, a quarter of fp32's).")] = "float",
    ragged: Annotated[bool, typer.Option(help="--backend ort: each query's visible keys as a graph input, so one "
                                         "call can carry rows with different pasts and new-token counts "
                                         "(mixed steps; no genai_config.json).")] = False,
) -> None:
    """Build an engine (lowered model + manifest.json) for one backend."""
    from mixtral_trt.exporter.build import build_engine

    given = {"max_prefill": max_prefill, "timing_cache": timing_cache, "debug_outputs": debug_outputs}
    trt_options = {name: value for name, value in given.items() if value not in (None, False)}
    with make_progress() as progress:
        path = build_engine(onnx_dir, engine_dir, backend=backend, overwrite=force, progress=progress,
                            genai_provider=genai_provider, experts=experts, cpu_kernels=cpu_kernels,
                            expert_dtype=expert_dtype, cpu_linears=cpu_linears, kv_cache=kv_cache,
                            ragged=ragged, **trt_options)
    typer.echo(f"built {backend} engine -> {path}")
