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
        """[R] each row's tokens: the position of its next one."""
        return np.bincount(self.owner, minlength=self.rows).astype(np.int64)

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
    a = np.asarray(present.numpy() if hasattr(present, "numpy") else present)[0]
    p = int(layout.past.sum())
    return [np.concatenate([a[:, ps : ps + lp], a[:, p + ns : p + ns + n]], axis=1)
            for ps, lp, ns, n in zip(layout.past_starts, layout.past, layout.new_starts, layout.new, strict=True)]
