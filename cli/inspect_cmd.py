"""`mixtral-export inspect CKPT`: validate a checkpoint, describe it, optionally chat with the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.chat.tokenizer import Tokenizer
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import make_progress
from mixtral_trt.common.validate import as_text

from .app import app


@app.command("inspect")
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (HF hub / fused, or mistral).")],
    chat: Annotated[
        str | None,
        typer.Option(
            help="Run the reference model greedily on this user message ([INST] format) and print the reply."
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Reply length limit for --chat.")] = 32,
) -> None:
    """Check every tensor of a checkpoint against its config and print a summary."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.mixtral_ref.checkpoint import inspect_checkpoint, load_model
    from mixtral_trt.mixtral_ref.generate import stream_chat

    if max_new_tokens < 1:
        raise MixtralTrtError(f"--max-new-tokens {max_new_tokens}: must be at least 1")
    if chat is not None:
        as_text("--chat", chat)
    info = inspect_checkpoint(checkpoint)
    cfg = info.config
    try:
        tokenizer, tokenizer_text = Tokenizer.from_checkpoint(checkpoint), None
        tokenizer_text = f"{tokenizer.path.name} ({tokenizer.version}, {tokenizer.vocab_size} tokens)"
        if tokenizer.vocab_size != cfg.vocab_size:
            tokenizer_text += f"  [yellow]does not match vocab_size {cfg.vocab_size}[/]"
    except MixtralTrtError as e:
        if chat is not None:
            raise
        tokenizer, tokenizer_text = None, f"[yellow]none[/] ({e})"

    table = Table(title=f"checkpoint {checkpoint}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "layout": info.layout,
        "files": f"{len(info.files)} ({info.nbytes / 2**20:.1f} MiB)",
        "dtype": info.dtype,
        "parameters": f"{cfg.num_parameters() / 1e6:,.1f}M total, "
        f"{cfg.num_parameters(active=True) / 1e6:,.1f}M active per token",
        "vocab / hidden / intermediate": f"{cfg.vocab_size} / {cfg.hidden_size} / {cfg.intermediate_size}",
        "layers": str(cfg.num_layers),
        "heads / kv heads / head_dim": f"{cfg.num_heads} / {cfg.num_kv_heads} / {cfg.head_dim}",
        "experts / top_k": f"{cfg.num_experts} / {cfg.top_k}",
        "rope_theta / rms_norm_eps": f"{cfg.rope_theta:g} / {cfg.rms_norm_eps:g}",
        "max positions / sliding window": f"{cfg.max_position_embeddings} / {cfg.sliding_window}",
        "tied embeddings": str(cfg.tie_word_embeddings),
        "tokenizer": tokenizer_text,
    }
    for key, value in rows.items():
        table.add_row(key, value)
    console = Console()
    console.print(table)
    if chat is None:
        return
    with make_progress(transient=True) as progress:
        model = load_model(checkpoint, progress=progress)
    console.print(f"[bold]user:[/] {chat}")
    sys.stdout.write("assistant: ")
    for piece in stream_chat(model, tokenizer, [{"role": "user", "content": chat}], max_new_tokens):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
