"""Dtype names every stage shares, and their numpy / torch / ONNX IR types.

The export dtype of a graph is named `fp32 | fp16 | bf16` (CLI, graph contract, manifest); tensors in the
contract carry numpy-style names (`float32`, `bfloat16`, `int64`). torch and onnx_ir are imported only by
the functions that return their types, so importing this module stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # export dtype -> numpy-style name
SHORT_NAMES = {v: k for k, v in DTYPES.items()}  # numpy-style name -> export dtype
SAFETENSORS_FLOATS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
# what quantized checkpoints store besides floats (packed codes, group indices, FP8 weights)
SAFETENSORS_OTHERS = {"I8": "int8", "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64",
                      "F8_E4M3": "float8_e4m3fn", "BOOL": "bool"}


def _long(name: str) -> str:
    return DTYPES.get(name, name)


def numpy_dtype(name: str) -> np.dtype:
    """`fp16` or `float16` -> np.dtype (bfloat16 from ml_dtypes)."""
    name = _long(name)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def torch_dtype(name: str) -> torch.dtype:
    """`fp16`, `float16` or a safetensors code (`F16`, `I32`) -> torch.float16."""
    import torch

    return getattr(torch, _long(SAFETENSORS_FLOATS.get(name, SAFETENSORS_OTHERS.get(name, name))))


def short_name(dtype: Any) -> str:
    """A torch or numpy float dtype -> `fp32 | fp16 | bf16`."""
    name = str(dtype).removeprefix("torch.")
    if name not in SHORT_NAMES:
        raise ValueError(f"{dtype} is not one of the export dtypes ({', '.join(DTYPES)})")
    return SHORT_NAMES[name]
