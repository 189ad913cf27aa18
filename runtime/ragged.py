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


def ragged_feeds(contract: GraphContract, rows: Sequence[RaggedRow]) -> tuple[dict[str, np.ndarray], RaggedLayout]:
    """The feeds of one packed call and the layout to split its outputs with (`split_tokens`, `split_present`)."""
    if not rows:
        raise MixtralTrtError("a ragged call needs at least one row")
    if any(len(r.ids) == 0 for r in rows):
        raise MixtralTrtError("a ragged call's rows need at least one new token each")
    layout = RaggedLayout(np.array([r.past for r in rows], np.int64), np.array([len(r.ids) for r in rows], np.int64))
    if int((layout.past + layout.new).max()) > contract.max_seq:
        raise MixtralTrtError(f"a row of {int((layout.past + layout.new).max())} tokens exceeds the engine's context "
                              f"of {contract.max_seq}")
    owner_past = np.repeat(np.arange(len(rows)), layout.past)  # [P]
    pos_past = np.concatenate([np.arange(n) for n in layout.past]).astype(np.int64)
    owner_new = np.repeat(np.arange(len(rows)), layout.new)  # [N]
    pos_new = np.concatenate([np.arange(p, p + n) for p, n in zip(layout.past, layout.new, strict=True)])
    owner, pos = np.concatenate([owner_past, owner_new]), np.concatenate([pos_past, pos_new])  # [P + N]
    visible = (owner[None, :] == owner_new[:, None]) & (pos[None, :] <= pos_new[:, None])  # [N, P + N]
    window = contract.config.sliding_window
    if window is not None:
        visible &= pos[None, :] > pos_new[:, None] - window
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.concatenate([np.asarray(r.ids, np.int64) for r in rows])[None],  # [1, N]
        "attention_mask": np.ones((1, owner.size), np.int64),  # [1, P + N] (the graph reads its shape only)
        "position_ids": pos_new[None].astype(np.int64),  # [1, N]
        VISIBLE: visible[None],  # [1, N, P + N]
    }
    for kind, side in (("key", "keys"), ("value", "values")):
        for i, name in enumerate(contract.cache_names(kind, "inputs")):
            feeds[name] = np.concatenate([np.asarray(getattr(r, side)[i]) for r in rows], axis=1)[None]  # [1, G, P, D]
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
