"""`mixtral-export build ONNX_DIR ENGINE_DIR --backend ...`: lower, optimise, and write an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app

MAX_PREFILL_HELP = "TensorRT: tokens per call of the prefill profile (longer prompts are chunked); default " \
    "min(2048, max-seq)."


@app.command("build")
def build(
    onnx_dir: Annotated[Path, typer.Argument(help="Directory written by `mixtral-export export`.")],
    engine_dir: Annotated[Path, typer.Argument(help="Output engine directory.")],
    backend: Annotated[str, typer.Option(help="ort | portable | plugins-cpu | trt | trt-dense")] = "ort",
    force: Annotated[bool, typer.Option(help="Replace ENGINE_DIR if it exists.")] = False,
    max_prefill: Annotated[int | None, typer.Option(help=MAX_PREFILL_HELP)] = None,
    timing_cache: Annotated[Path | None, typer.Option(help="TensorRT: timing cache file.")] = None,
    debug_outputs: Annotated[bool, typer.Option(help="TensorRT: keep hidden/router outputs (for parity per "
                                                "layer; prevents some fusion).")] = False,
) -> None:
    """Build an engine (lowered model + manifest.json) for one backend."""
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.mixtral_ref.progress import make_progress

    with make_progress() as progress:
        trt_options = {"max_prefill": max_prefill, "debug_outputs": debug_outputs}
        if timing_cache is not None:
            trt_options["timing_cache"] = timing_cache
        options = trt_options if backend in ("trt", "trt-dense") else {}
        path = build_engine(onnx_dir, engine_dir, backend=backend, overwrite=force, progress=progress, **options)
    typer.echo(f"built {backend} engine -> {path}")
