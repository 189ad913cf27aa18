"""Reference greedy decoding through the KV cache (`Mixtral.run`): the oracle for the runtime's generate.

One prefill over the prompt, then one token per step with the previous step's `present` as `past`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from mixtral_trt.common.errors import MixtralTrtError

from .model import Mixtral

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer


def greedy_steps(model: Mixtral, prompt_ids: Sequence[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """Endless greedy decoding: yields (token, float32 logits [V] it was chosen from) per step."""
    if not prompt_ids:
        raise ValueError("generate: the prompt is empty")
    device = model.embed.weight.device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=device)  # [1, T]
    past = None
    while True:
        with torch.inference_mode():
            out = model.run(ids, past=past)
        logits = out.logits[0, -1].float()  # [V]
        token = int(logits.argmax())
        yield token, logits
        past = out.present
        ids = torch.tensor([[token]], dtype=torch.int64, device=device)  # [1, 1]


def iter_generate(
    model: Mixtral, prompt_ids: Sequence[int], max_new_tokens: int, eos_id: int | None = None
) -> Iterator[int]:
    """Yield greedy tokens one at a time; stops after `eos_id` (yielded) or `max_new_tokens` tokens."""
    if not prompt_ids:
        raise ValueError("generate: the prompt is empty")
    for token, _logits in itertools.islice(greedy_steps(model, prompt_ids), max_new_tokens):
        yield token
        if token == eos_id:
            return


def generate(
    model: Mixtral, prompt_ids: Sequence[int], max_new_tokens: int, eos_id: int | None = None
) -> list[int]:
    """The new tokens only (not the prompt), ending with `eos_id` if it was produced."""
    return list(iter_generate(model, prompt_ids, max_new_tokens, eos_id))


def stream_chat(
    model: Mixtral, tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], max_new_tokens: int
) -> Iterator[str]:
    """The reply to a conversation ([INST] format), as text pieces while it is generated; EOS ends it."""
    if tokenizer.vocab_size != model.config.vocab_size:
        raise MixtralTrtError(
            f"{tokenizer.path}: {tokenizer.vocab_size} tokens, but the model's vocabulary has "
            f"{model.config.vocab_size}: not this model's tokenizer"
        )
    prompt = tokenizer.encode_chat(messages)
    decoder = tokenizer.stream_decoder()
    for token in iter_generate(model, prompt, max_new_tokens, tokenizer.eos_id):
        if token != tokenizer.eos_id:
            yield decoder.push(token)
    yield decoder.flush()
