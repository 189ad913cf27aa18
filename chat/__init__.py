"""mixtral_trt.chat: the Mixtral tokenizers and the chat format, below everything that speaks to a model.

tokenizer.py     `Tokenizer`: the SentencePiece models (v1, v3), the [INST] chat format, streaming detokenization
messages.py      chat messages checked and normalized into turns (tool calls, tool results)
template.py      the instruct format over those turns, with v3's tools
hf_tokenizer.py  HF tokenizer files (tokenizer.json, tokenizer_config.json + chat template) from SentencePiece

Imports only mixtral_trt.common; sentencepiece is imported when a model is opened. `Tokenizer` is imported on
first use, so `import mixtral_trt.runtime` (which needs only messages.py at import) stays as light as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

__all__ = ["Tokenizer"]


def __getattr__(name: str) -> Any:
    if name != "Tokenizer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .tokenizer import Tokenizer

    return Tokenizer
