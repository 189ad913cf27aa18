"""`mixtral-export init`: write a random checkpoint of a preset in the HF hub layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.progress import make_progress
from mixtral_trt.mixtral_ref.presets import get_preset

from .app import app


@app.command("init")
def init(
    out: Annotated[Path, typer.Argument(help="Output checkpoint directory.")],
    preset: Annotated[
        str, typer.Option(help="Model preset: tiny, small (mixtral-8x7b/8x22b are too big for random init).")
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed (the same seed gives the same weights).")] = 0,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Write a random checkpoint (HF hub layout, loadable by transformers) with the real Mixtral tokenizer."""
    from mixtral_trt.mixtral_ref.writer import init_checkpoint

    cfg = get_preset(preset)
    with make_progress(transient=True) as progress:
        path = init_checkpoint(cfg, out, seed=seed, overwrite=force, progress=progress)
    typer.echo(f"wrote {path}: preset {preset}, seed {seed}, {cfg.num_parameters() / 1e6:.1f}M parameters")
