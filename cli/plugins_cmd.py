"""`mixtral-export plugins list | compile | spills`: the sparse-dispatch plugins and their kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import make_progress
from mixtral_trt.plugins import PLUGINS
from mixtral_trt.plugins.ptx import written_ptx

from .app import plugins_app


@plugins_app.command("list")
def list_plugins() -> None:
    """Plugins with version, namespace, inputs, outputs and fields."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="sparse-dispatch plugins (TensorRT plugin id = namespace::name)")
    for col in ("plugin", "version", "namespace", "inputs", "outputs", "fields"):
        table.add_column(col)
    for spec in PLUGINS.values():
        table.add_row(spec.name, spec.version, spec.namespace,
                      escape("\n".join(f"{t.name} {t.shape} {'|'.join(t.dtypes)}" for t in spec.inputs)),
                      escape("\n".join(f"{t.name} {t.shape} {'|'.join(t.dtypes)}" for t in spec.outputs)),
                      escape("\n".join(f"{f.name}: {f.doc}" for f in spec.fields)))
    Console().print(table)


def _dtypes(dtypes: str) -> tuple[str, ...]:
    from mixtral_trt.plugins.variant import TRITON_TYPES

    chosen = tuple(d.strip() for d in dtypes.split(",") if d.strip())
    bad = [d for d in chosen if d not in TRITON_TYPES]
    if bad or not chosen:
        raise MixtralTrtError(f"--dtypes: {bad[0] if bad else dtypes!r} is not one of {', '.join(TRITON_TYPES)}")
    return chosen


@plugins_app.command("compile")
def compile_plugins(
    arch: Annotated[str, typer.Option(help="Target GPU architecture: sm_90a (H100/H200) or sm_80 (A100).")],
    out: Annotated[Path, typer.Option(help="Output directory for .ptx, .cubin and kernels.json.")],
    dtypes: Annotated[str, typer.Option(help="Activation dtypes, comma-separated.")] = "fp16,bf16,fp32",
    top_k: Annotated[int, typer.Option(help="Experts per token the kernels are specialised for.")] = 2,
    num_experts: Annotated[int, typer.Option(help="Experts per layer.")] = 8,
    cuda: Annotated[str | None, typer.Option(help="CUDA version of the NVIDIA driver that will load the PTX, e.g. "
                                                  "12.8 (it decides the PTX version; default: this machine's "
                                                  "driver, else Triton's newest PTX).")] = None,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Compile every kernel ahead of time (no GPU needed): one PTX (and cubin) per kernel variant, at the PTX
    version a driver of CUDA version --cuda loads."""
    from mixtral_trt.plugins.aot import compile_all, default_variants

    chosen = _dtypes(dtypes)
    if not 1 <= top_k <= num_experts <= 256:
        raise MixtralTrtError(f"--top-k {top_k} / --num-experts {num_experts}: need 1 <= top_k <= num_experts <= 256")
    with make_progress() as progress:
        paths = compile_all(arch, out, default_variants(chosen, top_k, num_experts), cuda=cuda,
                            overwrite=force, progress=progress)
    version = written_ptx(paths[0].read_text()) if paths else None
    typer.echo(f"wrote {len(paths)} kernels ({arch}, PTX {version // 10}.{version % 10}) to {out}" if paths else
               f"wrote no kernels to {out}")
    if cuda is None and version is not None and version > 90:
        typer.echo(f"note: no --cuda given and no NVIDIA driver found: PTX {version // 10}.{version % 10} is Triton's "
                   "newest, which older drivers reject; pass --cuda with the driver's CUDA version", err=True)


@plugins_app.command("spills")
def spill_report(
    arch: Annotated[str, typer.Option(help="Architectures, comma-separated.")] = "sm_90a,sm_80",
    dtypes: Annotated[str, typer.Option(help="Activation dtypes, comma-separated.")] = "fp16,bf16,fp32",
    cuda: Annotated[str, typer.Option(help="CUDA version of the driver the PTX is written for.")] = "12.8",
    jobs: Annotated[int, typer.Option(help="Compile processes.")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here.")] = None,
) -> None:
    """Registers, spills and shared memory of every default kernel variant as ptxas -v assembles its AOT PTX (no
    GPU needed); exit 1 when any variant spills."""
    import json
    from dataclasses import asdict

    from mixtral_trt.common.fileio import atomic_file
    from mixtral_trt.plugins.aot import ARCHS, default_variants
    from mixtral_trt.plugins.spills import markdown_table, measure, spilling

    archs = tuple(a.strip() for a in arch.split(",") if a.strip())
    bad = [a for a in archs if a not in ARCHS]
    if bad or not archs:
        raise MixtralTrtError(f"--arch: {bad[0] if bad else arch!r} is not one of {', '.join(ARCHS)}")
    with make_progress(transient=True) as progress:
        rows = measure(default_variants(_dtypes(dtypes)), archs, cuda, jobs, progress)
    typer.echo(markdown_table(rows))
    if json_out is not None:
        with atomic_file(json_out) as tmp:
            tmp.write(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    bad_rows = spilling(rows)
    typer.echo(f"{len(bad_rows)} of {len(rows)} variants spill" + (
        f"; worst: {bad_rows[0].stem} ({bad_rows[0].arch}) {bad_rows[0].usage.spills} B" if bad_rows else ""))
    if bad_rows:
        raise typer.Exit(1)
