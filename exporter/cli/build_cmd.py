"""`mixtral-export build ONNX_DIR ENGINE_DIR --backend ...`: lower, optimise, and write an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app


@app.command("build")
def build(
    onnx_dir: Annotated[Path, typer.Argument(help="Directory written by `mixtral-export export`.")],
    engine_dir: Annotated[Path, typer.Argument(help="Output engine directory.")],
    backend: Annotated[str, typer.Option(help="ort | portable | plugins-cpu | trt")] = "ort",
    force: Annotated[bool, typer.Option(help="Replace ENGINE_DIR if it exists.")] = False,
) -> None:
    """Build an engine (lowered model + manifest.json) for one backend."""
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.mixtral_ref.progress import make_progress

    with make_progress() as progress:
        path = build_engine(onnx_dir, engine_dir, backend=backend, overwrite=force, progress=progress)
    typer.echo(f"built {backend} engine -> {path}")
