"""Arrays between two processes of ours, without pickle: a message is an 8-byte little-endian length, a JSON
header (its own fields, plus each array's name, dtype and shape), then the arrays' raw bytes in that order."""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

import numpy as np

_LENGTH = struct.Struct("<Q")


def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name if dtype.kind == "V" else dtype.str  # "<f4"; ml_dtypes' "bfloat16"


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # noqa: F401  (registers the dtype with numpy)
    return np.dtype(name)


def write_message(stream: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    meta = [{"name": k, "dtype": _dtype_name(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()]
    blob = json.dumps({**header, "arrays": meta}).encode()
    stream.write(_LENGTH.pack(len(blob)) + blob)
    for v in arrays.values():
        stream.write(v.tobytes())
    stream.flush()


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The next message (header, arrays), or None when the stream ended before one began."""
    raw = _read_exactly(stream, _LENGTH.size)
    if raw is None:
        return None
    blob = _read_exactly(stream, _LENGTH.unpack(raw)[0])
    if blob is None:
        raise EOFError("the other process closed the stream inside a message")
    header = json.loads(blob)
    arrays = {}
    for meta in header.pop("arrays"):
        dtype = _dtype(meta["dtype"])
        size = int(np.prod(meta["shape"], dtype=np.int64)) * dtype.itemsize
        data = _read_exactly(stream, size) if size else b""
        if data is None:
            raise EOFError("the other process closed the stream inside a message")
        arrays[meta["name"]] = np.frombuffer(data, dtype).reshape(meta["shape"]).copy()
    return header, arrays
