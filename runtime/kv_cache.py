"""The KV cache carried between engine calls: per layer key and value arrays [B, G, P, D], and the
attention mask of the tokens they hold.

The present outputs of one call become the past inputs of the next, so decoding never recomputes the
prefix. The arrays are whatever the backend returned: numpy, ONNX Runtime OrtValues, or CUDA tensors,
passed back untouched between steps.

Rows are left-padded: row b's real tokens are the slots where `mask[b]` is 1, and its next token sits
at position `lengths[b]`. The row operations a scheduler needs to let requests join and leave a
running batch — `select`, `concat`, `trim` — are methods here, so that another cache layout (a shared
past/present buffer with per-row lengths) can offer the same surface.

An int8 cache (`build --kv-cache int8`, contract.kv_cache) holds, in `keys` and `values`, every layer's int8
codes [B, G, P, D] followed by every layer's float32 scales [B, G, P, 1] (the contract's `cache_names` order):
every row operation is the same on both, slot for slot, and a prefix cache's blocks keep codes and scales.
B batch, G kv heads, P cached slots, D head_dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.contract import GraphContract, TensorInfo
from mixtral_trt.common.dtypes import numpy_dtype
from mixtral_trt.common.errors import MixtralTrtError


def _shape(array: Any) -> tuple[int, ...]:
    shape = array.shape
    return tuple(shape() if callable(shape) else shape)  # OrtValue.shape is a method


def _is_torch(array: Any) -> bool:
    return type(array).__module__.startswith("torch")


def _editable(array: Any) -> Any:
    """An array that supports slicing and concatenation: torch tensors stay on their device, numpy stays
    numpy, an OrtValue is copied to the host (row operations are rare: once per join or leave)."""
    if _is_torch(array) or isinstance(array, np.ndarray):
        return array
    return array.numpy()


def _pad_left(array: Any, slots: int) -> Any:
    """[B, G, P, D] -> [B, G, slots + P, D], zeros in front."""
    if slots == 0:
        return array
    b, g, _, d = _shape(array)
    if _is_torch(array):
        import torch

        return torch.cat([array.new_zeros((b, g, slots, d)), array], dim=2)
    return np.concatenate([np.zeros((b, g, slots, d), array.dtype), array], axis=2)


def _padding_only(mask: np.ndarray) -> np.ndarray | None:
    """The mask, or None when every slot is real (the common case: no padding to carry)."""
    return None if mask.all() else mask


def token_bytes(contract: GraphContract) -> int:
    """Bytes one token takes in the cache: keys and values (and an int8 cache's scales) of every layer and kv head."""
    cfg, info = contract.config, {t.name: t for t in contract.inputs}
    names = contract.cache_names("key", "inputs") + contract.cache_names("value", "inputs")
    return sum(cfg.num_kv_heads * _width(cfg, info[n]) * numpy_dtype(info[n].dtype).itemsize for n in names)


def _width(cfg: MixtralConfig, tensor: TensorInfo) -> int:
    """The last dim of a cache tensor: head_dim, or 1 for an int8 cache's scales."""
    return 1 if tensor.role.endswith("_scale") else cfg.head_dim


def _cat_rows(arrays: list[Any]) -> Any:
    if _is_torch(arrays[0]):
        import torch

        return torch.cat(arrays, dim=0)
    return np.concatenate(arrays, axis=0)


@dataclass
class KVCache:
    keys: list[Any]  # per layer [B, G, P, D] (int8 cache: then per layer the scales [B, G, P, 1])
    values: list[Any]
    mask: np.ndarray | None = None  # [B, P] int64, 1 = a real token; None: every slot is real

    @classmethod
    def empty(cls, contract: GraphContract, batch: int) -> KVCache:
        cfg, info = contract.config, {t.name: t for t in contract.inputs}

        def arrays(kind: str) -> list[np.ndarray]:  # [B, G, 0, D] (scales [B, G, 0, 1]) in each input's dtype
            return [np.zeros((batch, cfg.num_kv_heads, 0, _width(cfg, info[n])), numpy_dtype(info[n].dtype))
                    for n in contract.cache_names(kind, "inputs")]

        return cls(arrays("key"), arrays("value"))

    @property
    def length(self) -> int:
        """Cached slots P (the longest row's tokens plus any padding in front of them)."""
        return _shape(self.keys[0])[2]

    @property
    def batch(self) -> int:
        return _shape(self.keys[0])[0]

    @property
    def attention_mask(self) -> np.ndarray:
        """[B, P] int64, 1 = real token."""
        return self.mask if self.mask is not None else np.ones((self.batch, self.length), np.int64)

    @property
    def lengths(self) -> np.ndarray:
        """[B] real tokens per row: the position of each row's next token."""
        return self.attention_mask.sum(axis=1)

    def feeds(self, contract: GraphContract) -> dict[str, np.ndarray]:
        names = zip(contract.cache_names("key", "inputs"), contract.cache_names("value", "inputs"), strict=True)
        out = {}
        for (kn, vn), k, v in zip(names, self.keys, self.values, strict=True):
            out[kn], out[vn] = k, v
        return out

    @classmethod
    def from_outputs(cls, outputs: dict[str, np.ndarray], contract: GraphContract,
                     mask: np.ndarray | None = None) -> KVCache:
        """The next call's cache; `mask` [B, S] is the attention mask of the call that produced it."""
        return cls([outputs[n] for n in contract.cache_names("key")],
                   [outputs[n] for n in contract.cache_names("value")],
                   None if mask is None else _padding_only(np.asarray(mask, np.int64)))

    # ---- row operations (a running batch that requests join and leave) ---------------------------
    def select(self, rows: Sequence[int]) -> KVCache:
        """The cache of `rows` only, in that order."""
        rows = [int(r) for r in rows]
        if rows == list(range(self.batch)):
            return self
        pick = np.asarray(rows, np.int64)

        def take(a: Any) -> Any:
            a = _editable(a)
            if _is_torch(a):
                import torch

                return a.index_select(0, torch.as_tensor(pick, device=a.device))
            return a[pick]

        return KVCache([take(k) for k in self.keys], [take(v) for v in self.values],
                       _padding_only(self.attention_mask[pick]))

    @classmethod
    def concat(cls, caches: Sequence[KVCache]) -> KVCache:
        """The rows of every cache, in order, each left-padded to the longest cache's length (padding
        masked out), so that every row's next token lands in the same slot."""
        if len(caches) == 1:
            return caches[0]
        p = max(c.length for c in caches)
        keys = [_cat_rows([_pad_left(_editable(c.keys[i]), p - c.length) for c in caches])
                for i in range(len(caches[0].keys))]
        values = [_cat_rows([_pad_left(_editable(c.values[i]), p - c.length) for c in caches])
                  for i in range(len(caches[0].values))]
        masks = [np.pad(c.attention_mask, ((0, 0), (p - c.length, 0))) for c in caches]
        return cls(keys, values, _padding_only(np.concatenate(masks, axis=0)))

    def editable(self) -> KVCache:
        """The same cache with arrays that slice and concatenate (OrtValues copied to the host once)."""
        return KVCache([_editable(k) for k in self.keys], [_editable(v) for v in self.values], self.mask)

    # ---- one row's tokens (what a prefix cache keeps) ------------------------------------------------
    def row_kv(self, row: int) -> tuple[list[Any], list[Any]]:
        """Row `row`'s real tokens, oldest first: per layer keys and values [G, L, D] (host numpy, or
        torch tensors on their device; an int8 cache: then per layer the scales [G, L, 1]). The row's tokens
        must be its last L slots (left padding only)."""
        n, p = int(self.lengths[row]), self.length
        if not self.attention_mask[row, p - n :].all():
            raise MixtralTrtError(f"KV cache row {row}: its tokens are not contiguous (padding between them)")
        return ([_editable(k)[row, :, p - n :] for k in self.keys],
                [_editable(v)[row, :, p - n :] for v in self.values])

    @classmethod
    def from_kv(cls, keys: Sequence[Any], values: Sequence[Any]) -> KVCache:
        """A batch-1 cache of one row's tokens: per layer [G, L, D] keys and values (row_kv's layout)."""
        return cls([k[None] for k in keys], [v[None] for v in values])

    def trim(self) -> KVCache:
        """Drop the padding slots every row has in front (after the longest rows left the batch)."""
        if self.mask is None:
            return self
        real = self.mask.any(axis=0)  # [P]
        n = int(real.argmax()) if real.any() else self.length
        if n == 0:
            return KVCache(self.keys, self.values, _padding_only(self.mask))
        cut = [_editable(a)[:, :, n:] for a in self.keys], [_editable(a)[:, :, n:] for a in self.values]
        return KVCache(*cut, _padding_only(self.mask[:, n:]))
