"""`mixtral-export eval ENGINE --text FILE [--reference CKPT|ENGINE]`: perplexity and KL divergence on real
text (parity.eval_text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.progress import make_progress

from .app import app


@app.command("eval")
def eval_command(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory (mixtral-export build).")],
    text: Annotated[Path, typer.Option(help="UTF-8 text file to score (docs/eval_text.txt is shipped).")],
    reference: Annotated[Path | None, typer.Option(help="Checkpoint (the fp32 reference model) or engine to "
                                                   "compare with.")] = None,
    ctx: Annotated[int | None, typer.Option(help="Window length in tokens, BOS included; only each window's "
                                            "second half is scored. [default: 512, or the engine's context]")] = None,
    stride: Annotated[int | None, typer.Option(help="Text tokens between window starts. [default: ctx]")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Use only the text's first N tokens.")] = None,
    save_reference: Annotated[Path | None, typer.Option(help="Store the reference pass here (uint16 log-probs, "
                                                        "64 KB per scored token at 32000 tokens).")] = None,
    reference_logits: Annotated[Path | None, typer.Option(help="A file saved by --save-reference, instead of "
                                                          "--reference.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the KL / router / expert-load PNG here.")] = None,
) -> None:
    """Perplexity, KL(reference || engine) per token, top-1 agreement, router flips and expert load."""
    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.parity import eval_text

    with make_progress(transient=True) as progress:
        report = eval_text(engine_dir, text, reference, ctx=ctx, stride=stride, max_tokens=max_tokens,
                           reference_logits=reference_logits, save_reference=save_reference, progress=progress)
    s = report.summary
    table = Table(title=f"eval: {report.backend} engine ({report.kind}) on {text}, {s['tokens']} scored tokens "
                  f"({report.windows} windows of {report.ctx}, stride {report.stride})")
    table.add_column("figure")
    table.add_column("value")
    table.add_row("perplexity", f"{s['perplexity']:.6g}")
    if report.kl:
        table.add_row("reference perplexity", f"{s['reference_perplexity']:.6g} ({report.reference})")
        kl = report.kl
        table.add_row("KL(ref || engine) mean / median", f"{kl['mean']:.4g} / {kl['median']:.4g}")
        table.add_row("KL p90 / p99 / max", f"{kl['p90']:.4g} / {kl['p99']:.4g} / {kl['max']:.4g}")
        table.add_row("top-1 agreement", f"{s['top1_agreement']:.4%}")
        table.add_row("mean |Δp| of the reference's top token", f"{s['mean_abs_delta_p']:.4g}")
    if report.router_flip_rate:
        table.add_row("router flip rate per layer", " ".join(f"{r:.2%}" for r in report.router_flip_rate))
    if report.expert_load:
        for i, load in enumerate(report.expert_load):
            table.add_row(f"layer {i} tokens per expert", " ".join(map(str, load)))
    elif report.kl is not None or report.reference_expert_load is None:
        table.add_row("router / expert load", "n/a: the engine has no routing outputs (export --debug-outputs)")
    console = Console()
    console.print(table)
    report.save(json_path, plot)
