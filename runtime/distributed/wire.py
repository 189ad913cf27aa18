"""Messages between the coordinator and the rank processes: a JSON header and raw array bytes, no pickle.

    [4-byte header length][header JSON][array 0 bytes][array 1 bytes]...
    header = {..., "arrays": [{"name", "dtype", "shape"}, ...]}

Arrays travel as their bytes (bfloat16 as its 16-bit pattern), so nothing received is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from mixtral_trt.common.dtypes import numpy_dtype


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> bytes:
    arrays = arrays or {}
    meta = [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays.items()]
    head = json.dumps({**header, "arrays": meta}).encode()
    return b"".join([struct.pack("<I", len(head)), head, *(np.ascontiguousarray(a).tobytes() for a in arrays.values())])


def decode(message: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    (n,) = struct.unpack_from("<I", message)
    header = json.loads(message[4 : 4 + n])
    arrays, offset = {}, 4 + n
    for meta in header.pop("arrays"):
        dtype = numpy_dtype(meta["dtype"])
        count = int(np.prod(meta["shape"], dtype=np.int64))
        arrays[meta["name"]] = np.frombuffer(message, dtype, count, offset).reshape(meta["shape"])
        offset += count * dtype.itemsize
    return header, arrays
