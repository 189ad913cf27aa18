"""One prompt's reply while it is generated: its ids, its text, when and why it ends, what to stream.

A reply ends on EOS (unless `ignore_eos`), on one of `stop_token_ids` (both kept as the last id, adding
no text), when its grammar has consumed EOS (constrained decoding, even with `ignore_eos`), when its text
contains one of the `stop` strings (the text is cut before it), or after `max_new_tokens` ids. Stop strings
are matched by an automaton fed only the new text (stop_strings.py: the cost per token does not grow with
their number). Streamed text never shows a stop string: text that could be the start of one is held back
until it is known not to be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .logprobs import TokenLogprob
from .sampling import SamplingParams
from .stop_strings import StopMatcher

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer


@dataclass(frozen=True)
class Completion:
    """A finished reply. `text` is None when the engine has no tokenizer."""

    token_ids: list[int]
    text: str | None
    finish_reason: str  # "stop" (EOS, stop token or stop string) | "length" (max_new_tokens)
    stop_reason: int | str | None  # the id or string that stopped it
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None  # one per token id, when SamplingParams.logprobs is set
    prompt_logprobs: list[TokenLogprob | None] | None = None  # one per prompt id (the first None), when asked


@dataclass(frozen=True)
class StreamEvent:
    """One new id of prompt `index` and the text it completes ("" while held back); the last event of a
    prompt carries its `finish_reason`."""

    index: int
    token_id: int
    text: str
    finish_reason: str | None = None
    logprob: TokenLogprob | None = None  # when SamplingParams.logprobs is set


class Reply:
    def __init__(self, index: int, prompt_tokens: int, params: SamplingParams, eos_id: int,
                 tokenizer: Tokenizer | None) -> None:
        self.index, self.prompt_tokens, self.params = index, prompt_tokens, params
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else {eos_id})
        self.decoder = tokenizer.stream_decoder() if tokenizer is not None else None
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0  # characters of `text` already streamed
        self.stops = StopMatcher(params.stop) if params.stop else None
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.prompt_logprobs: list[TokenLogprob | None] | None = None  # set by whoever prefilled the prompt

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int, end: bool = False, logprob: TokenLogprob | None = None) -> StreamEvent:
        """Add a new id (and its logprob); `end`: the reply ends with it (its grammar is complete), as on a
        stop token."""
        self.token_ids.append(token)
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        if token in self.stop_ids or end:
            self._finish("stop", token)
        elif self.decoder is not None:
            self.text += self.decoder.push(token)
            self._check_stop_strings()
        if not self.done and len(self.token_ids) >= self.params.max_new_tokens:
            self._finish("length", None)
        end = len(self.text) if self.done else len(self.text) - self._held_back()
        delta, self.emitted = self.text[self.emitted : end], max(self.emitted, end)
        return StreamEvent(self.index, token, delta, self.finish_reason, logprob)

    def completion(self) -> Completion:
        return Completion(list(self.token_ids), self.text if self.decoder is not None else None,
                          self.finish_reason or "length", self.stop_reason, self.prompt_tokens,
                          None if self.logprobs is None else list(self.logprobs),
                          None if self.prompt_logprobs is None else list(self.prompt_logprobs))

    def _finish(self, reason: str, stop_reason: int | None) -> None:
        if self.decoder is not None:  # bytes held back for an incomplete character
            self.text += self.decoder.flush()
            self._check_stop_strings()
        if self.finish_reason is None:
            self.finish_reason, self.stop_reason = reason, stop_reason

    def _check_stop_strings(self) -> None:
        """Feed the text added since the last check to the stop-string automaton; cut at a match."""
        if self.stops is None or self.done:
            return
        found = self.stops.feed(self.text[self.stops.fed:])
        if found is not None:
            at, s = found
            self.text = self.text[:at]
            self.finish_reason, self.stop_reason = "stop", s

    def _held_back(self) -> int:
        """Length of the longest end of `text` that is the beginning of a stop string."""
        return self.stops.held if self.stops is not None else 0
