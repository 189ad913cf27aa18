"""`mixtral-export device-check`: the plugins on a bare GPU without TensorRT (bench/device_check): kernels,
TensorRT's recorded launch contract through the CUDA driver, the plugin chain as the model; OUT/device_check.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.bench.device_check.__main__ import summary
from mixtral_trt.bench.device_check.run import run_device_check
from mixtral_trt.common.errors import MixtralTrtError

from .app import app


@app.command("device-check")
def device_check(
    out: Annotated[Path, typer.Option(help="Directory of device_check.json (+ device_check.png).")] = Path(
        "device-check"),
    launches: Annotated[Path | None, typer.Option(help="The launch file's directory (make device-check-launches; "
                                                  "default: ./device-check-launches of the checkout).")] = None,
    cpu_smoke: Annotated[bool | None, typer.Option("--cpu-smoke/--gpu", help="CPU stand-ins (the Triton "
                                                   "interpreter at tiny shapes) / require a GPU; default: a GPU "
                                                   "when one is visible.")] = None,
    phases: Annotated[str, typer.Option(help="Phases to run, e.g. 1,2.")] = "1,2,3,4",
    budget: Annotated[float | None, typer.Option(help="Seconds for all phases (default 330 on a GPU).")] = None,
) -> None:
    """Check the plugin kernels, their TensorRT launch contract and the plugin chain on this machine's GPU
    (CPU stand-ins without one); exit 1 if a check failed (the report says which)."""
    try:
        selected = tuple(int(p) for p in phases.split(",") if p.strip())
    except ValueError:
        raise MixtralTrtError(f"--phases {phases!r}: expected numbers such as 1,2") from None
    report = run_device_check(out, cpu_smoke, launches, selected, budget)
    typer.echo(summary(report))
    if not report["passed"]:
        raise typer.Exit(1)
