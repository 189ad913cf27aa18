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
    if info.quantized is not None:
        rows.update(_quantization_rows(info))
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


def _quantization_rows(info) -> dict[str, str]:
    """What `inspect` says of a GPTQ / AWQ / compressed-tensors checkpoint: format, bits, groups, act-order,
    which linears are quantized, and the bytes of an export's weights per engine dtype (codes kept or float)."""
    from mixtral_trt.exporter.quantize_stored import weight_bytes
    from mixtral_trt.mixtral_ref.keymaps import plan

    q = info.quantized.quant
    groups = ("per tensor" if q.group_size < 0 else "per output channel" if q.group_size == 0
              else f"{q.group_size} inputs")
    entries = plan(info.layout, info.config)
    sizes = []
    for dtype in ("fp32", "fp16", "bf16"):
        n, how = weight_bytes(info.quantized, entries, dtype)
        sizes.append(f"{dtype} {n / 2**20:,.1f} MiB ({how})")
    return {
        "quantization": f"{q.method} ({q.serialization}), {'FP8 e4m3' if q.kind == 'fp8' else f'int{q.bits}'}, "
                        f"{'symmetric' if q.symmetric else 'asymmetric (zero points)'}"
                        + (f", activations {q.activations} (kept float by the engines)" if q.kind == "fp8" else ""),
        "groups / act-order": f"{groups} / {'yes (g_idx)' if q.act_order else 'no'}",
        "quantized linears": ", ".join(f"{v} {k}" for k, v in sorted(info.quantized.kinds().items()))
                             + " (the rest float)",
        "export weights": "; ".join(sizes),
    }

