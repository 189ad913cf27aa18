"""Token logprobs in OpenAI's two shapes, from the runtime's `TokenLogprob`s (runtime/logprobs.py).

- chat completions: `{"content": [{"token", "logprob", "bytes", "token_id", "top_logprobs": [{"token",
  "logprob", "bytes", "token_id"}]}], "refusal": null}`, one entry per generated token, the top list
  `top_logprobs` long (`token_id` is Mistral's field, which its client requires; OpenAI's ignores it);
- completions (the legacy shape lm-eval reads): `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`,
  parallel lists; each `top_logprobs` entry maps token text -> logprob for the `logprobs` most likely tokens and
  always the chosen one (so up to logprobs + 1 entries, as OpenAI documents); with `echo` the prompt's tokens
  come first, the first one `null` (nothing predicts it).

A token's text is its bytes (SentencePiece's "▁" a space, byte-fallback pieces one byte each, control tokens
their piece) read as UTF-8, an incomplete character written as `\\xNN` escapes, as OpenAI writes partial
bytes. `text_offset` counts the characters of the token texts before each one (vLLM's rule), from 0 at the
first token given (the prompt's first with echo). A logprob of -inf (a token masked by a -100 bias is still
finite; a float32 underflow is not) is written -9999.0, as vLLM does, since JSON has no infinity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer
    from mixtral_trt.runtime.logprobs import TokenLogprob

FLOOR = -9999.0  # what -inf is written as


class TokenTexts:
    """Each id's text and bytes, computed once per tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.bytes = tokenizer.token_bytes()
        self.text = [b.decode("utf-8", "backslashreplace") for b in self.bytes]

    def chat_entry(self, token: int, logprob: float) -> dict[str, Any]:
        return {"token": self.text[token], "logprob": _finite(logprob), "bytes": list(self.bytes[token]),
                "token_id": token}

    def chat(self, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
        """A chat choice's (or chunk's) `logprobs` object."""
        content = []
        for lp in logprobs:
            entry = self.chat_entry(lp.token_id, lp.logprob)
            entry["top_logprobs"] = [self.chat_entry(t, v) for t, v in lp.top]
            content.append(entry)
        return {"content": content, "refusal": None}

    def completion(self, logprobs: Sequence[TokenLogprob | None], offset: int = 0,
                   prompt: Sequence[int] = ()) -> dict[str, Any]:
        """A completion choice's (or chunk's) `logprobs` object; `offset`: the text_offset of its first token;
        `prompt`: the ids of leading `None` entries (echo: the prompt's first token, which nothing predicts)."""
        out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for n, lp in enumerate(logprobs):
            token = lp.token_id if lp is not None else prompt[n]
            out["tokens"].append(self.text[token])
            out["text_offset"].append(offset)
            offset += len(self.text[token])
            if lp is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            out["token_logprobs"].append(_finite(lp.logprob))
            top = {self.text[t]: _finite(v) for t, v in lp.top}
            top.setdefault(self.text[token], _finite(lp.logprob))
            out["top_logprobs"].append(top)
        return out


def text_length(texts: TokenTexts, logprobs: Sequence[TokenLogprob | None], prompt: Sequence[int] = ()) -> int:
    """Characters of the token texts of `logprobs` (where the next text_offset starts)."""
    return sum(len(texts.text[lp.token_id if lp is not None else prompt[n]]) for n, lp in enumerate(logprobs))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR


class ChoiceLogprobs:
    """The logprobs of one choice, as its body or its stream chunks give them: `prompt` (echo) first, then the
    generated tokens; in a stream, each chunk takes what arrived since the previous one (`take`), its
    text_offsets continuing."""

    def __init__(self, texts: TokenTexts, chat: bool, prompt_ids: Sequence[int] = ()) -> None:
        self.texts, self.chat, self.prompt_ids = texts, chat, prompt_ids
        self.pending: list[TokenLogprob | None] = []
        self.offset = 0
        self.leading = 0  # entries still to come from the prompt (`None` ones resolved to prompt ids)

    def add_prompt(self, logprobs: Sequence[TokenLogprob | None]) -> None:
        self.pending.extend(logprobs)
        self.leading = len(logprobs)

    def add(self, logprobs: Sequence[TokenLogprob | None]) -> None:
        self.pending.extend(lp for lp in logprobs if lp is not None)

    def take(self) -> dict[str, Any]:
        """The pending entries as one `logprobs` object (chat or completion shape); pending is emptied."""
        entries, self.pending = self.pending, []
        if self.chat:
            return self.texts.chat(entries)
        prompt = self.prompt_ids[: self.leading]
        out = self.texts.completion(entries, self.offset, prompt)
        self.offset += text_length(self.texts, entries, prompt)
        self.leading = 0
        return out
