"""Sliding windows over a tokenized text, as llama.cpp's `llama-perplexity` scores them.

Each window is BOS followed by `ctx - 1` tokens of the text; windows start every `stride` text tokens. Only
the window's second half is scored (each prediction there has at least ctx/2 tokens of context), and a token
an earlier window already scored is not scored again: with stride >= ctx/2 each window scores its last
ctx/2 tokens (stride = ctx, the default, leaves the first half of every window unscored, as llama.cpp does),
with a shorter stride its last `stride` tokens. Text after the last full window is not scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_int

MIN_CTX = 4


@dataclass(frozen=True)
class Window:
    start: int  # first text token in the window (window position 1; position 0 is BOS)
    scored: int  # the last `scored` window positions are the targets

    def ids(self, tokens: np.ndarray, bos: int, ctx: int) -> np.ndarray:
        """[ctx] int64: BOS, then the window's text tokens."""
        return np.concatenate([[bos], tokens[self.start:self.start + ctx - 1]]).astype(np.int64)

    def positions(self, ctx: int) -> slice:
        """Window positions whose logits predict the scored targets: [ctx - scored - 1, ctx - 1)."""
        return slice(ctx - self.scored - 1, ctx - 1)

    def targets(self, tokens: np.ndarray, ctx: int) -> np.ndarray:
        """[scored] the text tokens predicted at `positions`."""
        end = self.start + ctx - 1
        return tokens[end - self.scored:end]


@dataclass(frozen=True)
class WindowPlan:
    ctx: int
    stride: int
    tokens: int  # text tokens available (after --max-tokens)
    windows: tuple[Window, ...]

    @property
    def scored(self) -> int:
        return sum(w.scored for w in self.windows)


def plan_windows(n_tokens: int, ctx: int, stride: int | None = None, what: str = "text",
                 max_ctx: int | None = None) -> WindowPlan:
    """The windows over `n_tokens` text tokens; a text shorter than one window is an error naming `what`."""
    ctx = as_int("ctx", ctx, MIN_CTX, max_ctx, "(the engine's context)" if max_ctx else "")
    stride = ctx if stride is None else as_int("stride", stride, 1, ctx, "(at most ctx)")
    if n_tokens < ctx - 1:
        raise MixtralTrtError(f"{what}: {n_tokens} tokens, shorter than one window of ctx={ctx} "
                              f"(BOS + {ctx - 1} tokens); give a longer text or a smaller --ctx")
    half = ctx // 2
    windows = [Window(start, half if start == 0 else min(half, stride))
               for start in range(0, n_tokens - (ctx - 1) + 1, stride)]
    return WindowPlan(ctx, stride, n_tokens, tuple(windows))
