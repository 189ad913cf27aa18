"""`mixtral-export generate ENGINE --prompt TEXT`: complete prompts with an engine, streaming the text."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.validate import as_text

from .app import app
from .sampling_opts import (
    Device,
    IgnoreEos,
    MaxNewTokens,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    sampling_params,
)
from .structured_opts import JsonMode, JsonSchema, response_format


@app.command("generate")
def generate(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory (mixtral-export build).")],
    prompt: Annotated[list[str], typer.Option(help="Text to complete; repeat for a batch.")],
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 0.0,
    top_k: TopK = 0,
    top_p: TopP = 1.0,
    repetition_penalty: RepetitionPenalty = 1.0,
    seed: Seed = None,
    stop: Stop = None,
    ignore_eos: IgnoreEos = False,
    stream: Annotated[bool, typer.Option(help="Print the text of a single prompt as it is generated.")] = True,
    json_mode: JsonMode = False,
    json_schema: JsonSchema = None,
    device: Device = "auto",
) -> None:
    """Complete one prompt (streamed) or several (one batch, each equal to its run alone)."""
    from mixtral_trt import runtime

    for text in prompt:
        as_text("--prompt", text)
    params = sampling_params(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, ignore_eos)
    fmt = response_format(json_mode, json_schema)
    engine = runtime.load(engine_dir, device=device)
    start = time.perf_counter()
    if len(prompt) == 1 and stream:
        tokens, finish = 0, None
        for event in engine.stream(prompt[0], params, response_format=fmt):
            tokens, finish = tokens + 1, event.finish_reason or finish
            print(event.text, end="", flush=True)
        print()
        _stats(tokens, finish or "length", start)  # no token at all: --max-new-tokens 0
        return
    completions = engine.generate(prompt, params, response_format=fmt)
    for n, c in enumerate(completions):
        print(f"[{n}] {c.text}" if len(completions) > 1 else c.text)
    _stats(sum(len(c.token_ids) for c in completions), ",".join(sorted({c.finish_reason for c in completions})), start)


def _stats(tokens: int, finish: str | None, start: float) -> None:
    elapsed = time.perf_counter() - start
    print(f"{tokens} tokens in {elapsed:.2f} s ({tokens / max(elapsed, 1e-9):.1f} tok/s), finish: {finish}",
          file=sys.stderr)
