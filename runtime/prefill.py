"""One prompt entering a batch-1 KV cache: the blocks a prefix cache holds of it first, then the rest in
chunks of at most a token budget each (the Scheduler interleaves them with its running rows' decode steps).

The prefix cache is looked up when the prompt's first chunk runs (not when it is admitted), so a prompt
admitted beside another that shares its beginning finds the blocks the other stored meanwhile.
The chunks run as consecutive engine calls over the growing cache, so the prompt's KV and last logits are
those of one whole prefill up to float rounding. Prompt logprobs (`prompt_logprobs`, for echo) need every
prompt position's logits, so such a prompt computes all its tokens (no prefix-cache lookup); its logprobs
are taken chunk by chunk, never holding [T, V] logits at once. Once complete, the prompt's blocks are given
to the prefix cache. On a ragged engine the Scheduler computes the chunks (`chunk`, `took`) inside its mixed steps
over its own packed cache instead (runtime/mixed_step.py). T prompt tokens, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .logprobs import TokenLogprob, token_logprob

if TYPE_CHECKING:
    from .engine import Engine
    from .gqa_cache import GQACache
    from .kv_cache import KVCache
    from .prefix_cache import Match, PrefixCache


class Prefill:
    def __init__(self, engine: Engine, prompt: Sequence[int], prefix_cache: PrefixCache | None = None,
                 prompt_logprobs: int | None = None, forward: Callable | None = None) -> None:
        """`forward`: the call that runs the engine (the Scheduler's counts expert load), `engine.forward` if None."""
        self.engine, self.prompt, self.prefix_cache = engine, list(prompt), prefix_cache
        self.forward = forward or engine.forward
        self.k = prompt_logprobs
        self.started = False  # the prefix cache is looked up at the first chunk (earlier prompts stored by then)
        self.match: Match | None = None
        self.cached = 0  # tokens served by the prefix cache
        self.done = 0  # prompt tokens in `cache`
        self.cache: KVCache | GQACache | None = None
        self.logits: np.ndarray | None = None  # [V] the last prompt position's, once complete
        self.prompt_logprobs: list[TokenLogprob | None] | None = [None] if prompt_logprobs is not None else None
        self.chunks = 0

    def start(self) -> None:
        """Look the prompt up in the prefix cache (at its first chunk): `cache` holds the matched tokens."""
        self.started = True
        if self.prefix_cache is None or self.k is not None:
            return
        self.match = self.prefix_cache.match(self.prompt)
        self.cached = self.done = self.match.tokens
        if self.cached:
            self.cache = self.prefix_cache.cache(self.match)

    @property
    def remaining(self) -> int:
        return len(self.prompt) - self.done

    @property
    def complete(self) -> bool:
        return self.started and self.remaining == 0

    def chunk(self, budget: int | None = None) -> list[int]:
        """The next min(budget, remaining) prompt tokens (all that remain when `budget` is None); `took` takes
        their logits once some call computed them."""
        if not self.started:
            self.start()
        n = self.remaining if budget is None else min(budget, self.remaining)
        return self.prompt[self.done : self.done + max(n, 0)]

    def took(self, logits: np.ndarray, tokens: int | None = None) -> None:
        """The logits [n, V] of the `chunk` of `tokens` (n if None) just computed: the prompt's logprobs (n must
        then be the whole chunk's), and its last logits once complete."""
        start, n = self.done, len(logits) if tokens is None else tokens
        self.done += n
        self.chunks += 1
        if self.prompt_logprobs is not None:  # row j predicts prompt token start + j + 1
            self.prompt_logprobs += [token_logprob(logits[j], self.prompt[start + j + 1], self.k)
                                     for j in range(n) if start + j + 1 < len(self.prompt)]
        if self.complete:
            self.logits = logits[-1]

    def advance(self, budget: int | None = None) -> int:
        """Compute the next min(budget, remaining) tokens on the prompt's own cache; returns how many."""
        ids = self.chunk(budget)
        if not ids:
            return 0
        # without prompt logprobs only the last position's logits are used: the LM head computes just those
        keep = 0 if self.prompt_logprobs is not None else 1
        out, self.cache = self.forward(np.asarray([ids]), self.cache, logits_to_keep=keep)
        self.took(out["logits"][0], len(ids))  # [n or 1, V]
        if self.complete and self.prefix_cache is not None:
            self.prefix_cache.store(self.prompt, *self.cache.row_kv(0))
        return len(ids)

    def run(self) -> Prefill:
        """The whole remaining prompt in one call."""
        self.advance(None)
        return self
