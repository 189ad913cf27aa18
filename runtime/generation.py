"""Batched generation over any engine: left-padded prefill, then one token per prompt per step.

Prompts of different lengths are left-padded to the longest; the attention mask hides the padding and
the position ids count only real tokens, so every prompt sees exactly what it would see alone (its
tokens equal its unbatched run's). A prompt that has finished keeps its row until the whole batch is
done, its new slots masked out. More prompts than the engine's max batch run as successive batches.
With the engine's prefix cache on (`Engine.enable_prefix_cache`), each prompt is prefilled alone over the
blocks the cache holds of it, and the rows are joined as the Scheduler joins them (`KVCache.concat`).
Logprobs (SamplingParams.logprobs / prompt_logprobs) come from the engine's logits (runtime/logprobs.py).
B batch, W longest prompt, S = W + steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError

from .logprobs import prompt_logprobs, token_logprob
from .prefill import Prefill
from .reply import Reply, StreamEvent
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer

    from .constrained import Constraint
    from .engine import Engine

PAD_ID = 0  # any id inside the vocabulary: padded slots are masked out


def check_prompts(engine: Engine, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[int]]:
    vocab = engine.config.vocab_size
    outside = [t for t, _ in params.logit_bias if t >= vocab]
    if outside:
        raise MixtralTrtError(f"logit_bias: token id {outside[0]} is outside the vocabulary [0, {vocab})")
    out = []
    for n, prompt in enumerate(prompts):
        where = f"prompt {n}" if len(prompts) > 1 else "prompt"
        ids = np.asarray([list(prompt)])  # [1, T]
        if ids.size == 0:
            raise MixtralTrtError(f"{where}: empty")
        if ids.shape[1] + params.max_new_tokens > engine.max_seq:
            raise MixtralTrtError(f"{where}: {ids.shape[1]} tokens + max_new_tokens {params.max_new_tokens} exceed "
                                  f"the engine's context of {engine.max_seq} tokens")
        out.append(engine.check_ids(ids, what=where)[0].tolist())
    return out


def stream_batch(
    engine: Engine, prompts: Sequence[Sequence[int]], params: SamplingParams, tokenizer: Tokenizer | None,
    constraints: Sequence[Constraint | None] | None = None,
) -> tuple[list[Reply], Iterator[StreamEvent]]:
    """The replies (filled in as the iterator runs) and an iterator of events, one per new token. The
    prompts are checked before this returns. `constraints`: one per prompt (None: free)."""
    prompts = check_prompts(engine, prompts, params)
    constraints = list(constraints) if constraints is not None else [None] * len(prompts)
    eos = engine.config.eos_token_id
    replies = [Reply(i, len(p), params, eos, tokenizer) for i, p in enumerate(prompts)]

    def events() -> Iterator[StreamEvent]:
        for start in range(0, len(prompts), engine.max_batch):
            end = start + engine.max_batch
            yield from _one_batch(engine, prompts[start:end], params, replies[start:end], constraints[start:end])

    return replies, events()


def _one_batch(engine: Engine, prompts: list[list[int]], params: SamplingParams, replies: list[Reply],
               constraints: list[Constraint | None]) -> Iterator[StreamEvent]:
    if params.max_new_tokens == 0 and params.prompt_logprobs is None:
        return
    samplers = [Sampler(params, p, c) for p, c in zip(prompts, constraints, strict=True)]
    b = len(prompts)
    if engine.prefix_cache is not None:
        last, cache, mask, next_pos = _prefill_rows(engine, prompts, params, replies)
    else:
        last, cache, mask, next_pos = _prefill_padded(engine, prompts, params, replies)
    if params.max_new_tokens == 0:  # the prompt's logprobs only
        return
    k = params.logprobs
    while True:
        step = np.full((b, 1), PAD_ID, np.int64)  # [B, 1]
        live = np.zeros((b, 1), np.int64)  # [B, 1]
        for i, reply in enumerate(replies):
            if reply.done:
                continue
            token = samplers[i](last[i])
            logprob = token_logprob(last[i], token, k, params.logit_bias) if k is not None else None
            yield reply.push(token, end=samplers[i].finished, logprob=logprob)
            if not reply.done:
                step[i, 0], live[i, 0] = token, 1
        if not live.any():
            return
        mask = np.concatenate([mask, live], axis=1)  # [B, S]
        out, cache = engine.forward(step, cache, attention_mask=mask, position_ids=next_pos)
        last, next_pos = out["logits"][:, -1], next_pos + 1


def _prefill_padded(engine: Engine, prompts: list[list[int]], params: SamplingParams, replies: list[Reply]):
    """One left-padded prefill of every prompt: (last logits [B, V], cache, mask [B, W], next positions [B, 1])."""
    b, w = len(prompts), max(len(p) for p in prompts)
    ids = np.full((b, w), PAD_ID, np.int64)  # [B, W] left-padded
    mask = np.zeros((b, w), np.int64)  # [B, W]
    for i, p in enumerate(prompts):
        ids[i, w - len(p) :], mask[i, w - len(p) :] = p, 1
    position = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # [B, W]
    keep = 0 if params.prompt_logprobs is not None else 1  # the last column's logits only: all its rows' last
    out, cache = engine.forward(ids, attention_mask=mask, position_ids=position, logits_to_keep=keep)
    if params.prompt_logprobs is not None:
        for i, p in enumerate(prompts):
            replies[i].prompt_logprobs = prompt_logprobs(out["logits"][i, w - len(p) :], p, params.prompt_logprobs)
    return out["logits"][:, -1], cache, mask, position[:, -1:] + 1


def _prefill_rows(engine: Engine, prompts: list[list[int]], params: SamplingParams, replies: list[Reply]):
    """Each prompt alone over what the engine's prefix cache holds of it, the rows then joined (as the
    Scheduler joins them): (last logits [B, V], cache, mask [B, P], next positions [B, 1])."""
    runs = []
    try:
        for p in prompts:
            runs.append(Prefill(engine, p, engine.prefix_cache, params.prompt_logprobs).run())
    finally:
        for run in runs:  # the rows hold copies of the blocks: nothing stays pinned
            engine.prefix_cache.release(run.match)
    for reply, run in zip(replies, runs, strict=True):
        reply.prompt_logprobs = run.prompt_logprobs
    caches = [run.cache for run in runs]
    cache = type(caches[0]).concat(caches)
    return np.stack([run.logits for run in runs]), cache, cache.attention_mask, cache.lengths[:, None].copy()
