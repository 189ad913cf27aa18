"""The int8 KV cache in the reference (`build --kv-cache int8`): every key and value is rounded to int8 with one
scale per (row, kv head, token) when it enters the cache, and attention reads it back dequantized.

The same arithmetic as the engine's graph (exporter/lowering/kv_int8.py), in float32: scale = max |x| / 127 over
head_dim, codes = round_half_even(x / scale) (x / 1 where the scale is 0), clipped to [-127, 127]; attention reads
codes * scale. The reference keeps the dequantized values in its cache (its past holds codes * scale), so parity
judges an int8-KV engine against what its cache holds, and reports the error against the float reference too.
B batch, G kv heads, T tokens, D head_dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .model import Mixtral

INT8_MAX = 127.0


def quantize_kv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, G, T, D] -> codes [B, G, T, D] int8, scales [B, G, T, 1] float32."""
    xf = x.float()
    scale = xf.abs().amax(-1, keepdim=True) / INT8_MAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(xf / safe).clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def dequantize_kv(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes [B, G, T, D] int8, scales [B, G, T, 1] -> [B, G, T, D] in `dtype`."""
    return (codes.float() * scale).to(dtype)


def fake_quantize_kv(x: torch.Tensor) -> torch.Tensor:
    """x [B, G, T, D] as the int8 cache gives it back."""
    return dequantize_kv(*quantize_kv(x), x.dtype)


def int8_kv_(model: Mixtral) -> Mixtral:
    """In place: every layer's new keys and values go through `fake_quantize_kv` before entering the cache."""
    for layer in model.layers:
        layer.attn.kv_rounding = fake_quantize_kv
    return model


@contextmanager
def float_kv(model: Mixtral) -> Iterator[Mixtral]:
    """`model` with a float cache for the duration (parity's error against the float-cache reference)."""
    saved = [layer.attn.kv_rounding for layer in model.layers]
    for layer in model.layers:
        layer.attn.kv_rounding = None
    try:
        yield model
    finally:
        for layer, rounding in zip(model.layers, saved, strict=True):
            layer.attn.kv_rounding = rounding
