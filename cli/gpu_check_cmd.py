"""`mixtral-export gpu-check`: the GPU run book (bench/gpu_check.py) — TensorRT engines with and without the
plugins, parity, the `gpu` tests, a benchmark, one JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.bench.gpu_check import run_gpu_check
from mixtral_trt.common.progress import make_progress

from .app import app


@app.command("gpu-check")
def gpu_check(
    out: Annotated[Path, typer.Option(help="The JSON report.")] = Path("gpu-check.json"),
    workdir: Annotated[Path, typer.Option(help="Checkpoint, export, engines and bench cache.")] = Path("gpu-check"),
    preset: Annotated[str, typer.Option(help="Model preset (random weights).")] = "small",
    tests: Annotated[Path | None, typer.Option(help="The repository's tests/ for `pytest -m gpu` (default: "
                                               "./tests when present).")] = None,
) -> None:
    """On an NVIDIA GPU with the `gpu` extra: build, check and benchmark the TensorRT engines; exit 1 if a step
    failed (the report says which)."""
    tests = tests or (Path("tests") if (Path("tests") / "conftest.py").is_file() else None)
    with make_progress() as progress:
        report = run_gpu_check(out, workdir, preset, tests, progress=progress)
    for name, result in report["steps"].items():
        if result["passed"] is None:
            typer.echo(f"skip {name}: {result['skipped']}")
            continue
        typer.echo(f"{'ok  ' if result['passed'] else 'FAIL'} {name} ({result['seconds']} s)"
                   + ("" if result["passed"] else f": {result['error']}"))
    typer.echo(f"wrote {out}")
    if not report["passed"]:
        raise typer.Exit(1)
