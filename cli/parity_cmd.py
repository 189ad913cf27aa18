"""`mixtral-export parity ENGINE_DIR --checkpoint CKPT`: judge an engine against the reference model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.progress import make_progress

from .app import app

PARITY_FAILED_EXIT = 1


@app.command("parity")
def parity(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory (mixtral-export build).")],
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint the engine was exported from.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the per-layer error plot (PNG) here.")] = None,
    steps: Annotated[int, typer.Option(help="Greedy decoding steps to compare.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the random prompts.")] = 0,
) -> None:
    """Logits, per-layer hidden-state and router agreement, greedy decoding; exit 1 beyond tolerance."""
    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.parity import check_engine

    with make_progress(transient=True) as progress:
        report = check_engine(engine_dir, checkpoint, greedy_steps=steps, seed=seed, progress=progress)
    table = Table(title=f"parity: {report.backend} engine ({report.dtype}) vs mixtral_ref (fp32)")
    for col in ("check", "measured", "tolerance"):
        table.add_column(col)
    tol = report.tolerance
    table.add_row("logits rel. error", f"{report.logits.max_rel:.2e} (mean abs {report.logits.mean_abs:.2e})",
                  f"{tol.logits_rel:.0e}")
    table.add_row("top-1 agreement", f"{report.top1.agreement:.2%} ({report.top1.near_tie} near-tie, "
                  f"{report.top1.unexplained} unexplained of {report.top1.positions})", "no unexplained flip")
    for lp in report.layers:
        if lp.hidden is None:
            table.add_row(f"layer {lp.layer}", "n/a: the graph has no debug outputs (export --debug-outputs, "
                          "then build; TensorRT also build --debug-outputs)", "")
            continue
        table.add_row(f"layer {lp.layer} hidden / router", f"{lp.hidden.max_rel:.2e} / {lp.router.max_rel:.2e}, "
                      f"flips {lp.flips.near_tie} near-tie, {lp.flips.unexplained} unexplained",
                      f"{tol.hidden_rel:.0e}")
    for g, n in zip(report.greedy, report.prompts, strict=False):
        table.add_row(f"greedy ({n}-token prompt)", f"{g.matched}/{g.steps} tokens match",
                      "exact, or diverging at a near-tie")
    if report.quantization:
        table.add_row("quantization", f"{report.quantization['scheme']}: logits rel. error vs the unquantized "
                      f"model {report.quantization['logits_rel_vs_unquantized']:.2e}",
                      "reported (the reference above is the dequantized model)")
    if report.kv_cache:
        table.add_row("KV cache", f"{report.kv_cache['kind']}: logits rel. error vs the float-cache reference "
                      f"{report.kv_cache['logits_rel_vs_float_kv']:.2e}",
                      "reported (the reference above rounds its cache the same way)")
    console = Console()
    console.print(table)
    report.save(json_path, plot)
    if not report.passed:
        for failure in report.failures:
            console.print(f"[red]FAIL[/] {failure}", highlight=False)
        raise typer.Exit(PARITY_FAILED_EXIT)
    console.print("[green]parity passed[/]")
