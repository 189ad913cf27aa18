"""The real Mixtral tokenizers: SentencePiece models shipped by mistral-common (v1: 8x7B, v3: 8x22B).

`Tokenizer` wraps the raw SentencePiece model and adds the [INST] chat format (template.py) and
incremental detokenization for streaming (`StreamDecoder`).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.paths import confined

from . import template

# Searched in this order in a checkpoint directory.
CHECKPOINT_FILES = ("tokenizer.model.v3", "tokenizer.model.v2", "tokenizer.model.v1", "tokenizer.model")
TEKKEN = "tekken.json"
# mistral-common's shipped files, by version, and the vocabulary size of each.
MISTRAL_COMMON_FILES = {"v1": "tokenizer.model.v1", "v3": "mistral_instruct_tokenizer_240323.model.v3"}
VERSION_FOR_VOCAB = {32000: "v1", 32768: "v3"}
SUPPORTED = ("v1", "v2", "v3")
MAX_FILE_BYTES = 64 << 20  # Mixtral's SentencePiece models are 0.5 MiB; never read a huge file whole
_MARKER = re.compile(r"\[[A-Z_0-9/]+\]")


def mistral_common_file(version: str) -> Path:
    """Path of a tokenizer file shipped inside the mistral-common package (without importing it)."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise MixtralTrtError("the mistral-common package is not installed (pip install mistral-common)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / MISTRAL_COMMON_FILES[version]


class Tokenizer:
    """A Mixtral SentencePiece tokenizer. `version` is the mistral-common instruct version (v1, v2, v3)."""

    def __init__(self, model_file: str | Path, version: str | None = None) -> None:
        import sentencepiece

        self.path = Path(model_file)
        if self.path.is_file() and self.path.stat().st_size > MAX_FILE_BYTES:
            raise MixtralTrtError(f"{self.path}: {self.path.stat().st_size / 2**20:.0f} MiB is not a tokenizer "
                                  f"(SentencePiece models are a few MiB)")
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as e:
            raise MixtralTrtError(
                f"{self.path}: not a SentencePiece model ({str(e).splitlines()[0]})"
            ) from None
        self.control_tokens: dict[str, int] = {
            self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size()) if self.sp.is_control(i)
        }
        self.version = version or self._detect_version()
        if self.version not in SUPPORTED:
            raise MixtralTrtError(
                f"{self.path}: tokenizer version {self.version} is not a Mixtral tokenizer "
                f"(supported: {', '.join(SUPPORTED)})"
            )

    def _detect_version(self) -> str:
        suffix = self.path.name.rsplit(".", 1)[-1]
        if suffix.startswith("v") and suffix[1:].isdigit():
            return suffix
        if "[INST]" not in self.control_tokens:
            return "v1"
        if "[SYSTEM_PROMPT]" in self.control_tokens:
            return "v7"
        return "v3" if "[IMG]" in self.control_tokens else "v2"

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Tokenizer:
        """The tokenizer file in a checkpoint directory (see CHECKPOINT_FILES)."""
        path = Path(path)
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return cls(confined(path, path / name))
        if (path / TEKKEN).is_file():
            raise MixtralTrtError(
                f"{path / TEKKEN}: Tekken tokenizers belong to later Mistral models, not "
                "Mixtral; not supported"
            )
        raise MixtralTrtError(f"{path}: no tokenizer file ({', '.join(CHECKPOINT_FILES)})")

    @classmethod
    def for_config(cls, cfg: MixtralConfig) -> Tokenizer:
        """mistral-common's v1 tokenizer for a 32000-token vocabulary, v3 for 32768."""
        return cls(mistral_common_file(version_for_config(cfg)))

    # ---- text ----------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @cached_property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that are never text: control tokens (BOS, EOS, [INST], [TOOL_CALLS], ...), <unk>, and the
        bracketed user-defined markers of v3 ([REFERENCE_DOC_0] ...)."""
        sp = self.sp
        return tuple(i for i in range(self.vocab_size)
                     if sp.is_control(i) or sp.is_unknown(i) or _MARKER.fullmatch(sp.id_to_piece(i)))

    def token_bytes(self, special_prefix: bytes = b"") -> list[bytes]:
        """The bytes each id stands for ("▁" is a space; byte-fallback pieces <0xNN> one byte); special ids
        give `special_prefix` + their piece."""
        sp, special = self.sp, set(self.special_ids)
        out = []
        for i in range(self.vocab_size):
            piece = sp.id_to_piece(i)
            if i in special:
                out.append(special_prefix + piece.encode())
            elif sp.is_byte(i):
                out.append(bytes([int(piece[3:5], 16)]))
            else:
                out.append(piece.replace("\u2581", " ").encode())
        return out

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        return [self.bos_id] * bos + self.sp.encode(text) + [self.eos_id] * eos

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; control tokens ([INST], BOS, EOS, ...) produce no text."""
        return self.sp.decode([int(i) for i in ids])

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], continue_final: bool = False,
                    tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Ids of a conversation of OpenAI-style messages (system, user, assistant with content or tool_calls,
        tool results) in the Mixtral instruct format, identical to mistral-common's `encode_chat_completion`
        (with `tools`, OpenAI-style function tools: v3 only). See template.encode_chat for a final
        assistant message and `continue_final`."""
        return template.encode_chat(
            messages, self.sp.encode, self.version, self.bos_id, self.eos_id, self.control_tokens, continue_final,
            tools,
        )

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def __repr__(self) -> str:
        return f"Tokenizer({self.path.name}, {self.version}, vocab={self.vocab_size})"


def tokenizer_file(source_dir: str | Path, vocab_size: int | None = None) -> Path | None:
    """The tokenizer file `Tokenizer.from_checkpoint(source_dir)` would use (None when there is none), after
    checking it: inside `source_dir` (no link leading elsewhere), a SentencePiece model, and of `vocab_size`
    tokens when given. Export and build call it before their long work."""
    for name in CHECKPOINT_FILES:
        source = Path(source_dir) / name
        if source.is_file():
            tok = Tokenizer(confined(source_dir, source))
            if vocab_size is not None and tok.vocab_size != vocab_size:
                raise MixtralTrtError(f"{source}: a tokenizer of {tok.vocab_size} tokens, but the model's vocabulary "
                                      f"has {vocab_size}: not this model's tokenizer")
            return source
    return None


def copy_tokenizer(source_dir: str | Path, target_dir: str | Path, vocab_size: int | None = None) -> Path | None:
    """Copy the checked `tokenizer_file(source_dir, vocab_size)` into `target_dir` (export and build carry it
    along, so an engine directory can chat on its own): nothing but this model's tokenizer is copied,
    hashed into a manifest and served. None when there is none."""
    import shutil

    source = tokenizer_file(source_dir, vocab_size)
    return None if source is None else Path(shutil.copyfile(source, Path(target_dir) / source.name))


def version_for_config(cfg: MixtralConfig) -> str:
    try:
        return VERSION_FOR_VOCAB[cfg.vocab_size]
    except KeyError:
        raise MixtralTrtError(
            f"no Mixtral tokenizer has a vocabulary of {cfg.vocab_size} tokens (v1: 32000, v3: 32768)"
        ) from None


class StreamDecoder:
    """Turns generated ids into text as they arrive, never splitting a multi-byte character.

    `push(id)` returns the new text (possibly ""), `flush()` what is still held back. The concatenation
    of everything returned equals `tokenizer.decode(all ids)`. Work per token is constant: only a
    window of the last few ids is decoded.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # ids before this have been emitted

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        done = self.tokenizer.decode(self.ids[self._prefix : self._read])
        text = self.tokenizer.decode(self.ids[self._prefix :])
        if len(text) <= len(done) or text.endswith("\ufffd"):  # nothing yet, or an incomplete character
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return text[len(done) :]

    def flush(self) -> str:
        done = self.tokenizer.decode(self.ids[self._prefix : self._read])
        text = self.tokenizer.decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return text[len(done) :]
