"""The decoding options `generate` and `chat` share (typer parameter types), and their SamplingParams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from mixtral_trt.runtime.sampling import SamplingParams

MaxNewTokens = Annotated[int, typer.Option(help="Most new tokens per reply.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")]
TopK = Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: all).")]
TopP = Annotated[float, typer.Option(help="Sample within the smallest set holding this probability mass.")]
RepetitionPenalty = Annotated[float, typer.Option(help="> 1 discourages tokens already in the prompt or reply.")]
Seed = Annotated[int | None, typer.Option(help="Seed for sampling (same seed, same reply).")]
Stop = Annotated[list[str] | None, typer.Option(help="A string that ends the reply (repeatable).")]
IgnoreEos = Annotated[bool, typer.Option(help="Keep generating past the end-of-sequence token.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda (ONNX Runtime engines).")]


def sampling_params(max_new_tokens: int, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                    seed: int | None, stop: list[str] | None, ignore_eos: bool) -> SamplingParams:
    from mixtral_trt.runtime.sampling import SamplingParams

    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()),
                          ignore_eos=ignore_eos)
