"""What `Engine.generate` / `stream` accept as prompts, checked before anything runs.

A prompt is text (str) or token ids (a sequence of integers, or a 1-D integer array); a batch is a list or
tuple of prompts, or a 2-D integer array. bytes are refused (they would read as ids), as are bools among
ids, floats, None and anything else: one MixtralTrtError naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_text, is_int


def _ids(where: str, value: Any) -> list[int]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            raise MixtralTrtError(f"{where}: expected token ids (a 1-D integer array), got a {value.ndim}-D "
                                  f"{value.dtype} array")
        return value.tolist()
    for i, t in enumerate(value):
        if not is_int(t):
            raise MixtralTrtError(f"{where}: token {i} is {t!r} ({type(t).__name__}); token ids are integers")
    return [int(t) for t in value]


def _prompt(where: str, value: Any) -> str | list[int]:
    if isinstance(value, str):
        return as_text(where, value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise MixtralTrtError(f"{where}: bytes are not a prompt; decode them to str, or give token ids as a "
                              "list of int")
    if isinstance(value, np.ndarray | Sequence):
        return _ids(where, value)
    raise MixtralTrtError(f"{where}: expected text (str) or token ids (a list of int), got {type(value).__name__}")


def prompt_batch(prompts: Any) -> tuple[list[str | list[int]], bool]:
    """(the prompts, each text or a list of ids; whether a batch was given)."""
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        return [_ids(f"prompts[{i}]", row) for i, row in enumerate(prompts)], True
    if isinstance(prompts, list | tuple):
        if not prompts:
            raise MixtralTrtError("prompt: empty; give text, token ids, or a list of prompts")
        if not is_int(prompts[0]):
            return [_prompt(f"prompts[{i}]", p) for i, p in enumerate(prompts)], True
    return [_prompt("prompt", prompts)], False
