"""Constrained decoding: a grammar decides which tokens may come next; the Sampler masks the rest.

The grammar engine is llguidance (chosen by measurement, see README "Function calling and JSON output"),
imported lazily: only constrained requests need it. A `Constraint` is per prompt and stateful:
`allowed()` gives the bool mask [V] for the next token, `advance(token)` moves past the drawn token,
`terminated` says the grammar has consumed EOS (nothing may follow). JSON is compact, as json.dumps writes
it (", " and ": ", no other whitespace), with one optional leading space: the instruct models start a reply
with a "▁"-token. V vocab.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer

INSTALL_HINT = "pip install 'mixtral-trt[constrained]' (llguidance>=1.9)"
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class Constraint(Protocol):
    terminated: bool

    def allowed(self) -> np.ndarray | None:  # bool [V]; None: every token
        ...

    def advance(self, token: int) -> None: ...


class BannedTokens:
    """Every token but `ids` (tool_choice "none" bans [TOOL_CALLS])."""

    terminated = False

    def __init__(self, vocab_size: int, ids: tuple[int, ...]) -> None:
        self._mask = np.ones(vocab_size, bool)  # [V]
        self._mask[list(ids)] = False

    def allowed(self) -> np.ndarray:
        return self._mask

    def advance(self, token: int) -> None:
        pass


class GrammarConstraint:
    """One prompt's llguidance matcher."""

    def __init__(self, matcher: Any, vocab_size: int, eos_id: int) -> None:
        self.matcher, self.vocab_size, self.eos_id = matcher, vocab_size, eos_id
        self._bits = np.zeros((vocab_size + 31) // 32, np.int32)  # [ceil(V / 32)] bitmask, bit i = token i
        self.terminated = False

    def allowed(self) -> np.ndarray:
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self.matcher.is_error():
            raise MixtralTrtError(f"constrained decoding: {_first_line(self.matcher.get_error())}")
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab_size]  # [V]
        return bits.view(bool)

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise MixtralTrtError(f"constrained decoding: token {token} rejected "
                                  f"({_first_line(self.matcher.get_error())})")
        self.terminated = token == self.eos_id


@dataclass(frozen=True)
class Grammar:
    """A checked grammar (llguidance's JSON form) for one tokenizer; `constraint()` gives a fresh matcher."""

    source: str
    tokenizer: Tokenizer

    def constraint(self) -> GrammarConstraint:
        llg = _llguidance()
        matcher = llg.LLMatcher(ll_tokenizer(self.tokenizer), self.source, log_level=0, limits=_limits())
        return GrammarConstraint(matcher, self.tokenizer.vocab_size, self.tokenizer.eos_id)


def compile_lark(lark: str, tokenizer: Tokenizer, what: str) -> Grammar:
    """Check `lark` against the tokenizer; an invalid grammar or schema is a user error naming `what`. The
    check builds a matcher and its first mask too: a grammar that fails only there (a reference loop that
    admits no value) is refused here, not at the first generated token."""
    llg = _llguidance()
    source = llg.LLMatcher.grammar_from_lark(lark)
    error = llg.LLMatcher.validate_grammar(source, ll_tokenizer(tokenizer), limits=_limits())
    if error and not error.startswith("WARNING"):
        raise MixtralTrtError(f"{what}: {_first_line(error)}")
    grammar = Grammar(source, tokenizer)
    try:
        grammar.constraint().allowed()
    except MixtralTrtError:
        raise MixtralTrtError(f"{what}: the schema admits no value (a reference loop?)") from None
    return grammar


def json_lark(schema: Mapping[str, Any], name: str = "value") -> str:
    """A lark rule `name` for JSON matching `schema`, in the compact style."""
    if not isinstance(schema, Mapping):
        raise MixtralTrtError(f"JSON schema must be an object, got {type(schema).__name__}")
    return f"{name}: %json {json.dumps({**schema, 'x-guidance': JSON_STYLE}, ensure_ascii=False)}"


def _first_line(error: str) -> str:
    """The message of an llguidance error, without its location or state dump."""
    line = (error.strip().splitlines() or ["grammar error"])[0].replace("<non-verbose/>", "").strip()
    return line.split(": ", 1)[1] if line.startswith("at ") and ": " in line else line


def _limits() -> Any:
    """llguidance's default limits, with short errors (no parser state or grammar in them)."""
    return _llguidance().LLParserLimits(verbose_errors=False)


# ---- the tokenizer as llguidance sees it -------------------------------------------------------------
_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ll_tokenizer(tokenizer: Tokenizer) -> Any:
    """llguidance's view of `tokenizer` (built once per Tokenizer: ~0.1 s for 32K tokens)."""
    if tokenizer not in _TOKENIZERS:
        llg = _llguidance()
        _TOKENIZERS[tokenizer] = llg.LLTokenizer(llg.TokenizerWrapper(_Vocabulary(tokenizer)))
    return _TOKENIZERS[tokenizer]


class _Vocabulary:
    """What llguidance.TokenizerWrapper reads: each token's bytes (control tokens prefixed with 0xFF, so
    that they never match text) and a text -> ids function without SentencePiece's leading "▁"."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.sp = tokenizer.sp
        self.eos_token_id, self.bos_token_id = tokenizer.eos_id, tokenizer.bos_id
        self.special_token_ids = tokenizer.special_ids
        self.tokens = tokenizer.token_bytes(special_prefix=b"\xff")
        self._newline = self.sp.encode("\n")  # ["▁", <0x0A>]: a newline is a byte token, never merged

    def __call__(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError("text only")
        ids = self.sp.encode("\n" + text)
        return ids[len(self._newline):]


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise MixtralTrtError(f"constrained output (JSON, tool_choice) needs llguidance: {INSTALL_HINT}") from None
    return llguidance
