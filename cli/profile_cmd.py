"""`mixtral-export profile`: where an ONNX Runtime engine's decode step spends its time (ORT's profiler)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_file

from .app import app


@app.command("profile")
def profile(
    engine: Annotated[Path, typer.Argument(help="An ort / portable engine directory.")],
    context: Annotated[int, typer.Option(help="Prompt tokens before the profiled steps.")] = 128,
    steps: Annotated[int, typer.Option(help="Decode steps profiled.")] = 32,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (default: all cores).")] = None,
    batch: Annotated[int, typer.Option(help="Rows decoded together (up to the engine's max batch).")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the split here.")] = None,
) -> None:
    """Split a decode step: MoE, attention, KV Concat, LM head, norms, ... and time outside the kernels."""
    from mixtral_trt.bench.decode_profile import profile_decode
    from mixtral_trt.common.manifest import Manifest

    if Manifest.load(engine, verify=False).backend not in ("ort", "portable", "ort-gqa"):
        raise MixtralTrtError(f"{engine}: profile reads ONNX Runtime engines (ort, portable)")
    result = profile_decode(engine, context, steps, threads, batch=batch)
    typer.echo(f"decode step {result['step_ms']:.2f} ms under the profiler ({result['runs']} steps): "
               f"kernels {result['kernels_ms']:.2f} ms, outside kernels {result['outside_kernels_ms']:.2f} ms")
    for name, ms in sorted(result["buckets_ms"].items(), key=lambda x: -x[1]):
        typer.echo(f"  {name:12s} {ms:7.3f} ms  {100 * ms / result['step_ms']:5.1f}%")
    if json_path:
        with atomic_file(json_path) as f:
            f.write(json.dumps(result, indent=2) + "\n")
