"""Log probabilities of tokens, as OpenAI's `logprobs` / `top_logprobs` and vLLM's `prompt_logprobs` give them.

A new token's logprob is the float32 log-softmax of the engine's logits at its position plus the request's
`logit_bias`, before anything else the sampler does: no temperature, top-k / top-p / min-p, penalties or
grammar mask. OpenAI documents logprobs as the model's log probabilities of the output tokens and names only
`logit_bias` as changing the logits themselves (the bias is added to the model's logits before sampling);
temperature and the filters shape the draw, not the reported distribution. Without a bias this is
what evaluation harnesses score (lm-eval's loglikelihood) and what vLLM reports by default (its raw logprobs).
Prompt logprobs are the model's own (no bias: it applies to what is sampled).
The log-sum-exp is accumulated in float64, so the figures are the float32
logits' exact log-softmax up to float32 rounding. `top` holds up to 20 most likely tokens (OpenAI's limit).
T positions, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class TokenLogprob:
    """One position: the chosen (or given) token's logprob and the `k` most likely tokens' (most likely first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """[..., V] float logits -> float32 log-probabilities (the log-sum-exp in float64)."""
    x = np.asarray(logits, np.float32).astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    return (x - lse).astype(np.float32)


def token_logprob(logits: np.ndarray, token: int, k: int, bias: Sequence[tuple[int, float]] = ()) -> TokenLogprob:
    """logits [V] (+ `bias`: (token id, added logit) pairs) -> `token`'s logprob and the top `k` (0..20)
    tokens' (ties: the lower id first)."""
    if bias:
        logits = np.asarray(logits, np.float32).astype(np.float64)  # a copy
        for t, b in bias:
            logits[t] += b
    lp = log_softmax(logits)  # [V]
    top = np.argpartition(-lp, k - 1)[:k] if 0 < k < lp.shape[-1] else np.arange(lp.shape[-1])[: max(k, 0)]
    top = top[np.lexsort((top, -lp[top]))]
    return TokenLogprob(int(token), float(lp[token]), tuple((int(i), float(lp[i])) for i in top))


def prompt_logprobs(logits: np.ndarray, tokens: Sequence[int], k: int) -> list[TokenLogprob | None]:
    """logits [T, V] of a prompt's positions (row t predicts token t + 1) -> one entry per prompt token, the
    first None (nothing predicts it), as vLLM's `prompt_logprobs` and OpenAI's `echo` give them."""
    return [None, *(token_logprob(logits[t], tokens[t + 1], k) for t in range(len(tokens) - 1))]
