"""Decode and prefill throughput of every implementation, measured the same way.

decode : prefill a `context`-token prompt (untimed), then time `new_tokens` greedy steps at batch 1,
         each a one-token forward through the KV cache plus the argmax.
prefill: time one forward over a `prompt`-token prompt (best of `repeats`), reported in tokens/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Throughput:
    tokens: int
    seconds: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ---- engines (any backend) ---------------------------------------------------------------------------
def engine_decode(engine, prompt: list[int], new_tokens: int) -> Throughput:
    ids = np.asarray([prompt], np.int64)
    out, cache = engine.forward(ids)
    token = int(out["logits"][0, -1].argmax())
    start = time.perf_counter()
    for _ in range(new_tokens):
        out, cache = engine.forward(np.asarray([[token]], np.int64), cache)
        token = int(out["logits"][0, -1].argmax())
    return Throughput(new_tokens, time.perf_counter() - start)


def engine_prefill(engine, prompt: list[int], repeats: int = 3) -> Throughput:
    """A generation's prefill: the cache and the last position's logits (as llama-bench's prompt test computes)."""
    ids = np.asarray([prompt], np.int64)
    return Throughput(len(prompt), _best(lambda: engine.forward(ids, logits_to_keep=1), repeats))


# ---- the PyTorch reference ---------------------------------------------------------------------------
def torch_decode(model, prompt: list[int], new_tokens: int) -> Throughput:
    import torch

    with torch.inference_mode():
        out = model.run(torch.tensor([prompt]))
        token, past = int(out.logits[0, -1].argmax()), out.present
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model.run(torch.tensor([[token]]), past=past)
            token, past = int(out.logits[0, -1].argmax()), out.present
        return Throughput(new_tokens, time.perf_counter() - start)


def torch_prefill(model, prompt: list[int], repeats: int = 3) -> Throughput:
    import torch

    ids = torch.tensor([prompt])
    with torch.inference_mode():
        return Throughput(len(prompt), _best(lambda: model(ids), repeats))


# ---- HF transformers (eager attention) ---------------------------------------------------------------
def hf_decode(model, prompt: list[int], new_tokens: int) -> Throughput:
    import torch

    with torch.inference_mode():
        out = model(torch.tensor([prompt]), use_cache=True)
        token, past = int(out.logits[0, -1].argmax()), out.past_key_values
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            token, past = int(out.logits[0, -1].argmax()), out.past_key_values
        return Throughput(new_tokens, time.perf_counter() - start)


def hf_prefill(model, prompt: list[int], repeats: int = 3) -> Throughput:
    import torch

    ids = torch.tensor([prompt])
    with torch.inference_mode():
        # the last position's logits, as our engines' and llama.cpp's prefill
        return Throughput(len(prompt), _best(lambda: model(ids, use_cache=False, logits_to_keep=1), repeats))
