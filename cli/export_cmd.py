"""`mixtral-export export CKPT OUT`: checkpoint -> canonical ONNX (custom MoE ops, KV-cache I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.progress import make_progress

from .app import app


@app.command("export")
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (HF or mistral layout).")],
    out: Annotated[Path, typer.Argument(help="Output directory for model.onnx, its weights and graph.json.")],
    dtype: Annotated[str, typer.Option(help="fp32 | fp16 | bf16: weights, activations and KV cache.")] = "fp32",
    max_seq: Annotated[int | None, typer.Option(help="Maximum context (cached + new tokens); "
                                                "default: the model's max_position_embeddings.")] = None,
    max_batch: Annotated[int, typer.Option(help="Maximum batch size.")] = 8,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    quantize: Annotated[str | None, typer.Option(help="Weight-only quantization: int8 | int4 (the experts; "
                                          "block-wise also the attention projections and the LM head).")] = None,
    quant_block: Annotated[int | None, typer.Option(help="Inputs per scale (power of 2 >= 16), 0 = per output "
                                                    "row (experts only); default 32.")] = None,
    tensor_parallel: Annotated[int, typer.Option(help="Ranks (GPUs) to split the model over: one graph per rank "
                                                 "in OUT/rank{r}/, each with only its share of the weights.")] = 1,
    debug_outputs: Annotated[bool, typer.Option(help="Add each layer's hidden state and router logits as graph "
                                                "outputs (parity's per-layer report); deployment graphs leave "
                                                "them out.")] = False,
) -> None:
    """Export a checkpoint to the canonical ONNX graph (one MoERouter + MoEExperts node per layer)."""
    from mixtral_trt.exporter.export import export_checkpoint

    with make_progress() as progress:
        path = export_checkpoint(checkpoint, out, dtype=dtype, max_seq=max_seq, max_batch=max_batch,
                                 overwrite=force, progress=progress, quantize_experts=quantize,
                                 quant_block=quant_block, tensor_parallel=tensor_parallel, debug_outputs=debug_outputs)
    split = f", {tensor_parallel} ranks" if tensor_parallel != 1 else ""
    typer.echo(f"exported {checkpoint} -> {path} ({dtype}{', weights ' + quantize if quantize else ''}{split})")
