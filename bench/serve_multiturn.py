"""serve-bench's multi-turn scenario: time to first token of a chat's second turn, whose prompt repeats a long
first turn (`prefix` tokens of user text) and its reply, through the HTTP server with the prefix cache off
(`--prefix-cache-gb 0`) and on (the default). Each repeat is a new conversation (its own text), so the only
blocks the cache holds for it are its own first turn's; the best of `repeats` is reported per server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.chat.tokenizer import Tokenizer
from mixtral_trt.common.progress import step

from .serve_load import WORDS, ServerProcess, chat_request

if TYPE_CHECKING:
    from rich.progress import Progress

    from .serve_load import ServeBenchSettings

REPLY_TOKENS = 16  # the first turn's reply


def long_text(tokenizer: Tokenizer, tokens: int, seed: int) -> str:
    """Words of WORDS in a seeded order, about `tokens` tokens long."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words), bos=False)) < tokens:
        words += [WORDS[i] for i in rng.integers(0, len(WORDS), max(8, (tokens - len(words)) // 2))]
    while len(tokenizer.encode(" ".join(words), bos=False)) > tokens:
        words.pop()
    return " ".join(words)


def multi_turn(engine_dir: Path, s: ServeBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """The scenario with a first turn of `s.multi_turn` tokens, `s.repeats` conversations per server."""
    prefix, repeats = s.multi_turn, s.repeats
    tokenizer = Tokenizer.from_checkpoint(engine_dir)
    out: dict[str, Any] = {"prefix_tokens": prefix, "repeats": repeats}
    for name, gb in (("without_cache", 0), ("with_cache", None)):
        ttfts, first_ttfts = [], []
        with ServerProcess(engine_dir, 1, s.threads, prefix_cache_gb=gb) as server:
            chat_request(server.port, 10**6, s, max_tokens=4)  # warm-up
            for r in range(repeats):
                with step(progress, f"multi-turn {name.replace('_', ' ')}: conversation {r + 1}/{repeats}"):
                    messages = [{"role": "user", "content": long_text(tokenizer, prefix, r)}]
                    first = chat_request(server.port, r, s, max_tokens=REPLY_TOKENS, messages=messages)
                    messages += [{"role": "assistant", "content": first["text"]},
                                 {"role": "user", "content": "And what happened next?"}]
                    second = chat_request(server.port, r, s, max_tokens=4, messages=messages)
                first_ttfts.append(first["ttft"])
                ttfts.append(second["ttft"])
        out[name] = {"first_turn_ttft_s": min(first_ttfts), "second_turn_ttft_s": min(ttfts),
                     "second_turn_ttft_median_s": float(np.median(ttfts))}
    out["second_turn_speedup"] = out["without_cache"]["second_turn_ttft_s"] / out["with_cache"]["second_turn_ttft_s"]
    return out
