"""`mixtral-export plugins list | compile`: the sparse-dispatch plugins and their kernels."""

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
    from mixtral_trt.plugins.variant import TRITON_TYPES

    chosen = tuple(d.strip() for d in dtypes.split(",") if d.strip())
    bad = [d for d in chosen if d not in TRITON_TYPES]
    if bad or not chosen:
        raise MixtralTrtError(f"--dtypes: {bad[0] if bad else dtypes!r} is not one of {', '.join(TRITON_TYPES)}")
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
