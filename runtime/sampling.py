"""Choosing the next token: greedy or sampled, with the processors users know from HF transformers, vLLM and OpenAI.

Order, as vLLM applies them: repetition penalty (HF / CTRL: prompt and reply tokens) -> presence and frequency
penalties (OpenAI: reply tokens only) -> temperature -> min-p -> top-k -> top-p -> draw. `temperature=0` is
greedy (argmax after the penalties). Each prompt of a batch draws from its own generator seeded with `seed`,
so a prompt gets the same tokens alone or inside any batch (vLLM's per-request seed). A `constraint`
(constrained.py: a grammar, or banned tokens) masks the logits before everything else, and then follows the
drawn token; `logit_bias` (OpenAI's: token id -> bias in [-100, 100]) is added to the logits next, before the
penalties. V vocab.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_float, as_int, as_text

from .logprobs import MAX_TOP_LOGPROBS

if TYPE_CHECKING:
    from .constrained import Constraint


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: all tokens
    top_p: float = 1.0  # nucleus mass kept; 1.0: all tokens
    repetition_penalty: float = 1.0  # > 1 discourages tokens of the prompt and the reply (HF / CTRL rule)
    presence_penalty: float = 0.0  # [-2, 2]: subtracted from the logit of every token the reply already has
    frequency_penalty: float = 0.0  # [-2, 2]: times the count of the token in the reply, subtracted
    min_p: float = 0.0  # [0, 1]: drop tokens less likely than min_p x the most likely one (after temperature)
    seed: int | None = None  # None: fresh entropy per call
    stop: tuple[str, ...] = ()  # strings that end the reply (not included in its text)
    stop_token_ids: tuple[int, ...] = ()  # ids that end the reply (kept as its last id, no text)
    ignore_eos: bool = False  # keep going past the tokenizer's EOS
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias in [-100, 100]) added to its logit (OpenAI's)
    logprobs: int | None = None  # each new token's logprob and this many top tokens' (0..20); None: none
    prompt_logprobs: int | None = None  # the same for every prompt token (echo); its prefill skips the prefix cache

    def __post_init__(self) -> None:
        """Each field checked and stored as a plain Python value (common/validate.py: NumPy integers and
        floats are numbers, bools are not); a bad one is a MixtralTrtError naming it."""
        def put(field: str, value) -> None:
            object.__setattr__(self, field, value)

        put("max_new_tokens", as_int("max_new_tokens", self.max_new_tokens, 0))
        put("temperature", as_float("temperature", self.temperature, lambda x: x >= 0,
                                    "a finite number >= 0 (0 is greedy)"))
        put("top_k", as_int("top_k", self.top_k, 0, hint="(0 keeps every token)"))
        put("top_p", as_float("top_p", self.top_p, lambda x: 0 < x <= 1, "in (0, 1]"))
        put("repetition_penalty", as_float("repetition_penalty", self.repetition_penalty, lambda x: x > 0,
                                           "a finite number > 0 (1 is none)"))
        for name in ("presence_penalty", "frequency_penalty"):
            put(name, as_float(name, getattr(self, name), lambda x: -2 <= x <= 2, "a number in [-2, 2] (0 is none)"))
        put("min_p", as_float("min_p", self.min_p, lambda x: 0 <= x <= 1, "a number in [0, 1] (0 keeps every token)"))
        if self.seed is not None:
            put("seed", as_int("seed", self.seed, 0))
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop  # one string is one stop string
        if isinstance(stop, bytes | bytearray) or not isinstance(stop, Iterable):
            raise MixtralTrtError(f"stop={self.stop!r}: must be a string or a list of strings")
        put("stop", tuple(stop))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise MixtralTrtError(f"stop={self.stop!r}: stop strings must be non-empty strings")
        for s in self.stop:
            as_text("stop", s)
        if isinstance(self.stop_token_ids, str | bytes | bytearray) or not isinstance(self.stop_token_ids, Iterable):
            raise MixtralTrtError(f"stop_token_ids={self.stop_token_ids!r}: must be a list of token ids")
        put("stop_token_ids", tuple(as_int("stop_token_ids", t, 0) for t in self.stop_token_ids))
        for name in ("logprobs", "prompt_logprobs"):
            if getattr(self, name) is not None:
                put(name, as_int(name, getattr(self, name), 0, MAX_TOP_LOGPROBS))
        if not isinstance(self.ignore_eos, bool):
            raise MixtralTrtError(f"ignore_eos={self.ignore_eos!r}: must be True or False")
        bias = self.logit_bias.items() if isinstance(self.logit_bias, Mapping) else self.logit_bias
        if isinstance(bias, str | bytes | bytearray) or not isinstance(bias, Iterable):
            raise MixtralTrtError(f"logit_bias={self.logit_bias!r}: must map token ids to biases")
        pairs = [tuple(p) if isinstance(p, Sequence) and not isinstance(p, str) else (p,) for p in bias]
        if any(len(p) != 2 for p in pairs):
            raise MixtralTrtError(f"logit_bias={self.logit_bias!r}: must map token ids to biases")
        put("logit_bias", tuple(sorted(
            (as_int("logit_bias", t, 0), as_float("logit_bias", b, lambda x: -100 <= x <= 100, "in [-100, 100]"))
            for t, b in pairs)))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: np.ndarray, seen: Sequence[int], penalty: float) -> np.ndarray:
    """logits [V]: each seen token's logit divided by `penalty` when positive, multiplied when negative."""
    if penalty == 1.0 or not len(seen):
        return logits
    out = logits.copy()
    _penalize(out, seen, penalty)
    return out


def _penalize(x: np.ndarray, seen: Sequence[int], penalty: float) -> None:
    """apply_repetition_penalty in place."""
    if penalty == 1.0 or not len(seen):
        return
    ids = np.unique(np.asarray(seen, np.int64))
    picked = x[ids]
    x[ids] = np.where(picked > 0, picked / penalty, picked * penalty)


def apply_reply_penalties(x: np.ndarray, reply: Sequence[int], presence: float, frequency: float) -> None:
    """logits [V] in place: OpenAI's rule, logit[j] -= frequency * count[j] + presence * (count[j] > 0), count
    over the reply's tokens so far."""
    if (presence == 0 and frequency == 0) or not len(reply):
        return
    ids, counts = np.unique(np.asarray(reply, np.int64), return_counts=True)
    x[ids] -= frequency * counts + presence


def filter_min_p(logits: np.ndarray, p: float) -> np.ndarray:
    """logits [V]: tokens whose probability is below p x the most likely token's set to -inf (vLLM's min-p)."""
    if p <= 0:
        return logits
    # prob_j >= p * prob_max  <=>  logit_j >= logit_max + log(p)
    return np.where(logits < logits.max() + np.log(p), -np.inf, logits)


def filter_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """logits [V]: all but the k largest set to -inf (ties at the k-th value are kept, as in HF)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


TOP_P_CANDIDATES = 1024  # top-p looks among this many most likely tokens first; it sorts the rest only when needed


def filter_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """logits [V]: keep the smallest set of most likely tokens whose probability reaches p (at least one).

    HF's rule: sorted ascending (ties by index), a token is dropped while the cumulated mass up to it is at most
    1 - p. When the TOP_P_CANDIDATES most likely tokens hold more than p, every other token is dropped and
    only those candidates are sorted (0.2 ms instead of 2 ms at V = 32000)."""
    if p >= 1.0:
        return logits
    probs = softmax(logits)
    n, m = logits.shape[-1], TOP_P_CANDIDATES
    top = np.argpartition(logits, n - m)[n - m:] if n > 2 * m else None  # the m largest, unordered
    if top is not None and probs[top].sum() > p + 1e-9:
        order = top[np.lexsort((top, logits[top]))]  # [m] ascending, ties by index (a stable sort's order)
        cum = (1.0 - probs[order].sum()) + np.cumsum(probs[order])  # the mass of every token up to each one
    else:
        order = np.argsort(logits, kind="stable")  # [V] ascending, as HF sorts
        cum = np.cumsum(probs[order])
    keep = order[cum > 1.0 - p]
    keep = keep if keep.size else order[-1:]  # the most likely token always stays
    out = np.full_like(logits, -np.inf)
    out[keep] = logits[keep]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    np.exp(z, out=z)
    z /= z.sum()
    return z


DRAW_BLOCK = 256  # tokens per block of the two-level inverse CDF


def draw(rng: np.random.Generator, logits: np.ndarray, work: np.ndarray | None = None) -> int:
    """One token from softmax(logits [V]) by its inverse CDF, as numpy's `rng.choice(V, p=...)` draws (one
    `rng.random()`, the first token whose cumulated mass exceeds it), in two levels: the masses of blocks of
    DRAW_BLOCK tokens are cumulated, then only the chosen block's tokens (0.05 ms instead of 0.39 at V = 32000;
    the tokens equal numpy's but where a different summation order moves a boundary by an ulp). `work`: a
    float64 [V] buffer to use instead of a new array."""
    w = np.subtract(logits, logits.max(), out=work)
    np.exp(w, out=w)  # [V] unnormalised probabilities; 0 for -inf logits, which are never drawn
    pad = (-w.shape[-1]) % DRAW_BLOCK
    blocks = (np.concatenate([w, np.zeros(pad, w.dtype)]) if pad else w).reshape(-1, DRAW_BLOCK)  # [V/256, 256]
    mass = blocks.sum(axis=1)
    ends = np.cumsum(mass)  # mass up to the end of each block
    target = rng.random() * ends[-1]
    b = int(ends.searchsorted(target, side="right"))
    if b == len(ends):  # u * total rounded up to the total
        b = int(np.flatnonzero(mass)[-1])
    inner = np.cumsum(blocks[b]) + (ends[b - 1] if b else 0.0)
    i = int(inner.searchsorted(target, side="right"))
    if i == DRAW_BLOCK:  # the block's own sum rounded below the target: its last token with mass
        i = int(np.flatnonzero(blocks[b])[-1])
    return b * DRAW_BLOCK + i


def processed_logits(logits: np.ndarray, seen: Sequence[int], params: SamplingParams,
                     out: np.ndarray | None = None, reply: Sequence[int] = ()) -> np.ndarray:
    """logits [V] (float64) after the penalties, temperature, min-p, top-k and top-p (the module's order);
    `seen`: prompt and reply ids (repetition penalty), `reply`: the reply's ids (presence / frequency). `out`:
    a float64 [V] buffer to compute in (a Sampler keeps one: a fresh 256 KB array per token costs glibc's
    allocator a trim and page faults, more than the arithmetic)."""
    x = np.empty(logits.shape, np.float64) if out is None else out
    np.copyto(x, logits)
    _penalize(x, seen, params.repetition_penalty)
    apply_reply_penalties(x, reply, params.presence_penalty, params.frequency_penalty)
    if params.greedy:
        return x
    try:
        with np.errstate(over="raise"):
            np.divide(x, params.temperature, out=x)
    except FloatingPointError:
        # A temperature near 0 (1e-320) overflows, and softmax would compute inf - inf = NaN. Shifted to
        # a maximum of 0 (the same distribution, top-k and top-p sets), x / temperature is 0 or -inf.
        np.copyto(x, logits)
        _penalize(x, seen, params.repetition_penalty)
        apply_reply_penalties(x, reply, params.presence_penalty, params.frequency_penalty)
        with np.errstate(over="ignore"):
            np.divide(x - x.max(), params.temperature, out=x)
    return filter_top_p(filter_top_k(filter_min_p(x, params.min_p), params.top_k), params.top_p)


class Sampler:
    """One prompt's token chooser; `seen` holds its prompt and reply ids (for the repetition penalty).

    With a `constraint`, tokens it does not allow get -inf before the processors; `finished` turns True once
    the constraint has ended (its grammar consumed EOS): a loop driving Samplers ends that row there."""

    def __init__(self, params: SamplingParams, prompt: Sequence[int], constraint: Constraint | None = None) -> None:
        self.params = params
        self.seen = list(prompt)
        self.prompt_tokens = len(self.seen)
        self.rng = np.random.default_rng(params.seed)
        self.constraint = constraint
        ids, biases = zip(*params.logit_bias, strict=True) if params.logit_bias else ((), ())
        self._bias = (np.asarray(ids, np.int64), np.asarray(biases, np.float64))  # [K] ids, [K] biases
        self._work: tuple[np.ndarray, np.ndarray] | None = None  # float64 [V] buffers, reused every token

    @property
    def finished(self) -> bool:
        return self.constraint is not None and self.constraint.terminated

    def __call__(self, logits: np.ndarray) -> int:  # logits [V]
        allowed = self.constraint.allowed() if self.constraint is not None else None  # bool [V] or None
        if allowed is not None:
            logits = np.where(allowed, logits, -np.inf)
        if self._bias[0].size:  # added before every processor, as OpenAI's logit_bias is
            logits = logits.astype(np.float64)  # a copy
            np.add.at(logits, self._bias[0], self._bias[1])
        if self._work is None or self._work[0].shape != logits.shape:
            self._work = (np.empty(logits.shape, np.float64), np.empty(logits.shape, np.float64))
        p = self.params
        reply = self.seen[self.prompt_tokens :] if p.presence_penalty or p.frequency_penalty else ()
        x = processed_logits(logits, self.seen, p, out=self._work[0], reply=reply)
        token = int(np.argmax(x)) if self.params.greedy else draw(self.rng, x, work=self._work[1])
        if self.constraint is not None:
            self.constraint.advance(token)
        self.seen.append(token)
        return token
