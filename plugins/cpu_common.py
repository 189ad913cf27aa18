"""What the plugins' ONNX Runtime Python ops (plugins/<folder>/cpu.py) share: their attributes from the spec, numpy
arrays as torch tensors for the launchers, quantized codes as bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .spec import PluginSpec

if TYPE_CHECKING:
    import torch


def fields(spec: PluginSpec, types: Any) -> dict[str, Any]:
    """The op's attributes: every field of the spec, int64 (`types` is onnxruntime-extensions' PyCustomOpDef)."""
    return {f.name: types.dt_int64 for f in spec.fields}


def tensor(a: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def codes_as_bytes(a: np.ndarray) -> torch.Tensor:
    """int32 elements packing the uint8 codes (the trt lowering) -> the uint8 tensor the kernels read."""
    return tensor(np.ascontiguousarray(a).view(np.uint8))


def quant(attrs: dict[str, Any]) -> tuple[int, int, int, int]:
    """The quantized GEMMs' attributes: top_k, block_size, bits, quant_block."""
    return int(attrs["top_k"]), int(attrs["block_size"]), int(attrs["bits"]), int(attrs["quant_block"])
