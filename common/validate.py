"""Argument checks at the API boundary: each bad argument is one MixtralTrtError naming it.

Integers are Python ints or NumPy integers, never bools (`True` is not a token count); numbers are ints or
floats of either kind, never bools, and finite. The checked value comes back as a plain Python int /
float, so nothing downstream meets a NumPy scalar. Text must encode to UTF-8: command-line arguments and
file names with invalid bytes reach Python as lone surrogates, which the tokenizer cannot take.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import MixtralTrtError


def is_int(value: Any) -> bool:
    """An integer that is not a bool: int, np.int64, ... (np.bool_ is no numbers.Integral)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """`value` as an int within [minimum, maximum]; a MixtralTrtError naming `name` otherwise."""
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
        raise MixtralTrtError(f"{name}={value!r}: must be an integer{' ' + ' and '.join(bounds) if bounds else ''}"
                              f"{' ' + hint if hint else ''}")
    return int(value)


def as_float(name: str, value: Any, ok: Any = None, requirement: str = "a finite number") -> float:
    """`value` as a finite float for which `ok(value)` holds; a MixtralTrtError naming `name` and saying
    `requirement` otherwise."""
    good = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if good:
        x = float(value)
        good = math.isfinite(x) and (ok is None or ok(x))
    if not good:
        raise MixtralTrtError(f"{name}={value!r}: must be {requirement}")
    return float(value)


def as_text(name: str, value: Any) -> str:
    """`value`, a str that encodes to UTF-8; a MixtralTrtError naming `name` otherwise."""
    if not isinstance(value, str):
        raise MixtralTrtError(f"{name}: expected text (str), got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MixtralTrtError(f"{name}: not valid UTF-8 (undecodable byte at character {e.start})") from None
    return value


def decode_text(name: str, data: bytes) -> str:
    """Bytes read from a file or stdin, decoded as UTF-8; a MixtralTrtError naming `name` otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MixtralTrtError(f"{name}: not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
