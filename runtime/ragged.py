"""One engine call over ragged rows: each row its own past and its own number of new tokens, packed as batch 1
for a graph with ragged attention (`attention_visible`, exporter/lowering/ragged.py).

The rows' pasts lie one after another in one cache sequence, then their new tokens one after another; each
token has its own position (its row's count of tokens before it) and sees the keys of its own row at positions
up to its own (and within the sliding window, if the model has one). So a prompt chunk of T tokens and B decode
rows cost one call of B + T tokens, where a batch of rows padded to T tokens costs (B + 1) * T: what a mixed
step (chunked prefill beside decode rows, vLLM's mixed batches) needs on engines whose cost grows with tokens.
Rows come as `KVCache.row_kv` gives them (per cache input [G, L, D], real tokens only), and go back so.
R rows, L_r a row's past, n_r its new tokens, P = sum L_r, N = sum n_r, G kv heads, D head_dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixtral_trt.common.contract import ATTENTION_VISIBLE as VISIBLE
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError


@dataclass(frozen=True)
class RaggedRow:
    keys: Sequence[Any]  # per key cache input [G, L, D] (an int8 cache: then the scales [G, L, 1])
    values: Sequence[Any]
    ids: Sequence[int]  # the row's new tokens, at least one

    @property
    def past(self) -> int:
        return int(self.keys[0].shape[1])


@dataclass(frozen=True)
class RaggedLayout:
    """Where each row's tokens sit in the packed call."""

    past: np.ndarray  # [R] L_r
    new: np.ndarray  # [R] n_r

    @property
    def past_starts(self) -> np.ndarray:  # [R] first cache slot of row r's past
        return np.concatenate([[0], np.cumsum(self.past)[:-1]]).astype(np.int64)

    @property
    def new_starts(self) -> np.ndarray:  # [R] first new-token index of row r
        return np.concatenate([[0], np.cumsum(self.new)[:-1]]).astype(np.int64)


def visibility(owner: np.ndarray, pos: np.ndarray, new_owner: np.ndarray, new_pos: np.ndarray,
               window: int | None) -> np.ndarray:
    """[N, P + N] bool: new token q sees slot s when s holds its row's token at a position up to its own (and
    within the sliding window). `owner` / `pos`: the row and position of every slot, cached then new."""
    visible = (owner[None, :] == new_owner[:, None]) & (pos[None, :] <= new_pos[:, None])
    if window is not None:
        visible &= pos[None, :] > new_pos[:, None] - window
    return visible


def padded_visibility(mask: np.ndarray, t: int, window: int | None) -> np.ndarray:
    """[B, T, S] bool: what the canonical graph computes from a key-padding mask [B, S] for T new tokens in the last
    T slots (mixtral_ref.layers.attention_bias): a ragged engine's ordinary calls (Engine.forward) feed it."""
    s = mask.shape[1]
    key, query = np.arange(s), np.arange(s - t, s)  # [S], [T] slots
    visible = key[None, :] <= query[:, None]  # [T, S]
    if window is not None:
        visible &= key[None, :] > query[:, None] - window
    return visible[None] & mask[:, None, :].astype(bool)


@dataclass
class PackedCache:
    """Every row's tokens in one batch-1 cache sequence, in the order they were computed: a call's present is the
    next call's past as it is (the graph's own Concat is the only copy), a row joins with no copy at all, and each
    call feeds any number of new tokens per row. `owner` / `pos`: each slot's row and position in it."""

    keys: list[Any]  # per key cache input [1, G, P, D]: numpy, or the OrtValues a call returned
    values: list[Any]
    owner: np.ndarray  # [P] int64
    pos: np.ndarray  # [P] int64
    rows: int

    @classmethod
    def empty(cls, contract: GraphContract, rows: int) -> PackedCache:
        from .kv_cache import KVCache

        cache = KVCache.empty(contract, 1)  # [1, G, 0, D] arrays in each input's dtype
        return cls(cache.keys, cache.values, np.zeros(0, np.int64), np.zeros(0, np.int64), rows)

    @classmethod
    def from_rows(cls, rows: Sequence[RaggedRow]) -> PackedCache:
        """The rows' pasts packed one after another (a copy)."""
        past = [r.past for r in rows]
        def packed(side: str) -> list[np.ndarray]:  # per cache input [1, G, P, D]
            arrays = [getattr(r, side) for r in rows]
            return [np.concatenate([np.asarray(a[i]) for a in arrays], axis=1)[None] for i in range(len(arrays[0]))]

        return cls(packed("keys"), packed("values"),
                   np.repeat(np.arange(len(rows)), past).astype(np.int64),
                   np.concatenate([np.arange(n) for n in past]).astype(np.int64), len(rows))

    @property
    def length(self) -> int:
        """Slots P: every row's tokens."""
        return int(self.owner.size)

    @property
    def lengths(self) -> np.ndarray:
        """[R] each row's tokens: the position of its next one (dead slots, owner -1, count for no row)."""
        return np.bincount(self.owner[self.owner >= 0], minlength=self.rows).astype(np.int64)

    @property
    def dead(self) -> int:
        """Slots of rows that left (`without`): never visible, dropped by `compacted`."""
        return int((self.owner < 0).sum())

    def slots(self, row: int) -> np.ndarray:
        """[L] the slots of `row`, in position order."""
        at = np.flatnonzero(self.owner == row)
        return at[np.argsort(self.pos[at], kind="stable")]

    def row_kv(self, row: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Row `row`'s tokens, oldest first: per cache input [G, L, D] host arrays (`KVCache.row_kv`'s layout, what a
        prefix cache stores and `joined` takes); a copy of that row's slots only."""
        at = self.slots(row)
        return [host(k)[0][:, at] for k in self.keys], [host(v)[0][:, at] for v in self.values]

    def joined(self, keys: Sequence[Any], values: Sequence[Any]) -> PackedCache:
        """One more row, holding the tokens `keys` / `values` (per cache input [G, L, D], positions 0..L-1): a
        prefix-cache match or another row's copy (a copy of the cache, once per such join)."""
        n = int(keys[0].shape[1])
        def cat(mine: list[Any], theirs: Sequence[Any]) -> list[np.ndarray]:  # per cache input [1, G, P + L, D]
            return [np.concatenate([host(a), np.asarray(b)[None]], axis=2) for a, b in zip(mine, theirs, strict=True)]

        return PackedCache(cat(self.keys, keys), cat(self.values, values),
                           np.concatenate([self.owner, np.full(n, self.rows, np.int64)]),
                           np.concatenate([self.pos, np.arange(n, dtype=np.int64)]), self.rows + 1)

    def without(self, rows: Sequence[int]) -> PackedCache:
        """`rows`' slots marked dead (owner -1: no query sees them again); nothing is copied."""
        owner = np.where(np.isin(self.owner, np.asarray(rows, np.int64)), -1, self.owner)
        return PackedCache(self.keys, self.values, owner, self.pos, self.rows)

    def compacted(self, keep: Sequence[int]) -> PackedCache:
        """Only the slots of rows `keep`, which become rows 0.. in that order (one copy of their slots)."""
        keep = np.asarray(keep, np.int64)
        number = np.full(self.rows + 1, -1, np.int64)  # old row (-1 last: dead) -> new row
        number[keep] = np.arange(keep.size)
        owner = number[self.owner]
        at = np.flatnonzero(owner >= 0)
        return PackedCache([host(k)[:, :, at] for k in self.keys], [host(v)[:, :, at] for v in self.values],
                           owner[at], self.pos[at], int(keep.size))

    def feeds(self, contract: GraphContract, new: Sequence[Sequence[int]]) -> tuple[dict[str, Any], np.ndarray,
                                                                                     np.ndarray]:
        """One call's feeds for `new[r]`, row r's new tokens (none for some rows, at least one in all), and the
        new tokens' rows and positions [N] (`advanced` takes them)."""
        if len(new) != self.rows:
            raise MixtralTrtError(f"a ragged call over {self.rows} rows got new tokens for {len(new)}")
        counts = np.array([len(ids) for ids in new], np.int64)
        if not counts.any():
            raise MixtralTrtError("a ragged call needs at least one new token")
        if int((self.lengths + counts).max()) > contract.max_seq:
            raise MixtralTrtError(f"a row of {int((self.lengths + counts).max())} tokens exceeds the engine's "
                                  f"context of {contract.max_seq}")
        new_owner = np.repeat(np.arange(self.rows), counts).astype(np.int64)  # [N]
        new_pos = np.concatenate([np.arange(p, p + n) for p, n in zip(self.lengths, counts, strict=True)])
        owner, pos = np.concatenate([self.owner, new_owner]), np.concatenate([self.pos, new_pos])  # [P + N]
        feeds: dict[str, Any] = {
            "input_ids": np.concatenate([np.asarray(ids, np.int64) for ids in new])[None],  # [1, N]
            "attention_mask": np.ones((1, owner.size), np.int64),  # [1, P + N] (the graph reads its shape only)
            "position_ids": new_pos[None].astype(np.int64),  # [1, N]
            VISIBLE: visibility(owner, pos, new_owner, new_pos, contract.config.sliding_window)[None],  # [1, N, P + N]
        }
        for kind, arrays in (("key", self.keys), ("value", self.values)):
            feeds.update(zip(contract.cache_names(kind, "inputs"), arrays, strict=True))
        return feeds, new_owner, new_pos.astype(np.int64)

    def advanced(self, contract: GraphContract, outputs: dict[str, Any], new_owner: np.ndarray,
                 new_pos: np.ndarray) -> PackedCache:
        """The cache after the call whose present outputs are `outputs` (no copy)."""
        return PackedCache([outputs[n] for n in contract.cache_names("key")],
                           [outputs[n] for n in contract.cache_names("value")],
                           np.concatenate([self.owner, new_owner]), np.concatenate([self.pos, new_pos]), self.rows)

    def with_rows(self, rows: int) -> PackedCache:
        """`rows` more empty rows (requests joining; no copy)."""
        return PackedCache(self.keys, self.values, self.owner, self.pos, self.rows + rows)


class _DLPack:
    """A CPU OrtValue as a DLPack producer: numpy reads its memory in place (the capsule keeps the value alive)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __dlpack__(self, stream: Any = None, **_: Any) -> Any:
        return self.value._ortvalue.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


def host(array: Any) -> np.ndarray:
    """A cache array on the host: numpy as it is, a CPU OrtValue viewed in place (no copy: a row's slots or the live
    ones are then gathered alone), another device's copied."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "device_name") and array.device_name().lower() == "cpu" and hasattr(array, "_ortvalue"):
        return np.from_dlpack(_DLPack(array))
    return np.asarray(array.numpy() if hasattr(array, "numpy") else array)


def ragged_feeds(contract: GraphContract, rows: Sequence[RaggedRow]) -> tuple[dict[str, np.ndarray], RaggedLayout]:
    """The feeds of one packed call and the layout to split its outputs with (`split_tokens`, `split_present`)."""
    if not rows:
        raise MixtralTrtError("a ragged call needs at least one row")
    if any(len(r.ids) == 0 for r in rows):
        raise MixtralTrtError("a ragged call's rows need at least one new token each")
    layout = RaggedLayout(np.array([r.past for r in rows], np.int64), np.array([len(r.ids) for r in rows], np.int64))
    feeds, _, _ = PackedCache.from_rows(rows).feeds(contract, [r.ids for r in rows])
    return feeds, layout


def split_tokens(out: np.ndarray, layout: RaggedLayout) -> list[np.ndarray]:
    """An output [1, N, ...] (logits) -> each row's [n_r, ...]."""
    return [out[0, s : s + n] for s, n in zip(layout.new_starts, layout.new, strict=True)]


def split_present(present: Any, layout: RaggedLayout) -> list[np.ndarray]:
    """A present output [1, G, P + N, D] -> each row's cache [G, L_r + n_r, D] (its past, then its new tokens)."""
    a = host(present)[0]
    p = int(layout.past.sum())
    return [np.concatenate([a[:, ps : ps + lp], a[:, p + ns : p + ns + n]], axis=1)
            for ps, lp, ns, n in zip(layout.past_starts, layout.past, layout.new_starts, layout.new, strict=True)]
