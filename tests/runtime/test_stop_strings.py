"""The stop-string automaton against the naive matcher it replaced (every string searched in the whole text
after each piece, the held-back length by trying every prefix of every string): same cut, same stop string,
same held-back length after every piece, on seeded random texts over a small alphabet (many overlaps), and
through `Reply` token by token."""

from __future__ import annotations

import random

import numpy as np

from mixtral_trt.runtime.reply import Reply
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.stop_strings import StopMatcher


def naive_match(text: str, stops: list[str]) -> tuple[int, str] | None:
    hits = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def naive_held(text: str, stops: list[str]) -> int:
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


def test_automaton_equals_the_naive_matcher_piece_by_piece():
    rng = random.Random(0)
    cases = 0
    for _ in range(3000):
        alphabet = "ab" if rng.random() < 0.5 else "abcé "
        stops = list({"".join(rng.choices(alphabet, k=rng.randint(1, 5))) for _ in range(rng.randint(1, 6))})
        matcher, text = StopMatcher(stops), ""
        while True:
            piece = "".join(rng.choices(alphabet, k=rng.randint(0, 4)))
            text += piece
            got, expected = matcher.feed(piece), naive_match(text, stops)
            assert got == expected, (stops, text, got, expected)
            if got is not None:
                cases += 1
                break
            assert matcher.held == naive_held(text, stops), (stops, text, matcher.held)
            if len(text) > 40:
                break
    assert cases > 1000  # most texts met a stop string


def test_reply_cuts_and_holds_back_as_before():
    """Reply driven by a fake tokenizer whose ids are characters: the streamed deltas and the final text
    equal what the naive rules give."""

    class Chars:
        def stream_decoder(self):
            class D:
                def push(self, token):
                    return chr(token)

                def flush(self):
                    return ""

            return D()

    rng = np.random.default_rng(1)
    for _ in range(300):
        stops = ["".join(rng.choice(list("xyz"), rng.integers(1, 4))) for _ in range(rng.integers(1, 5))]
        ids = [ord(c) for c in rng.choice(list("xyz"), 30)]
        reply = Reply(0, 1, SamplingParams(max_new_tokens=30, stop=tuple(stops)), eos_id=-1, tokenizer=Chars())
        streamed, text = "", ""
        for token in ids:
            event = reply.push(token)
            streamed += event.text
            text += chr(token)
            if reply.done:
                break
            assert len(text) - len(streamed) == naive_held(text, stops)
        expected = naive_match(text, stops)
        if expected is not None:
            assert reply.done and reply.text == text[: expected[0]] and reply.stop_reason == expected[1]
        assert streamed == reply.text


def test_twenty_thousand_stop_strings():
    stops = [f"stop{n:06d}" for n in range(20000)]
    matcher = StopMatcher(stops)
    assert matcher.feed("a story without them " * 50) is None and matcher.held == 0
    assert matcher.feed("stop0123") is None and matcher.held == 8
    assert matcher.feed("45!") == (1050, "stop012345")
