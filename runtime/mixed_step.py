"""A Scheduler's running batch on a ragged engine (`build --ragged`): every row in one `PackedCache`, and each
step ONE engine call carrying every running row's next token beside the next chunks of the prompts entering
(vLLM's mixed batches), so a joining prompt adds its chunk's tokens to the running rows' step instead of a call
of its own.

Rows are keyed by their holder (the Scheduler's requests). A row joins empty, or holding a prefix-cache match
(`join`, one copy of the match into the cache); a prompt's chunks then enter as that row's new tokens, and when
the prompt is complete the row simply goes on decoding (its slots are already in place). An extra sample of
the prompt (n > 1) forks the row (`fork`: one copy of its slots under a new row).

A row that leaves is only marked dead (`PackedCache.without`: its slots are never visible again), so a leave
copies nothing and puts no spike into the others' next step (storing its tokens in the prefix cache gathers that
row's slots alone, read in place from the call's outputs: `ragged.host`). Dead slots still ride along in every call (the
graph's Concat copies them, attention scores them masked), so once they outnumber the live ones (more than half
the cache) the cache is compacted: the live slots gathered in one copy, the rows renumbered. That bounds the
waste at 2x the live tokens and the copying at one per as many departed tokens as remain. Every step's cost
is then the live tokens' (up to that factor); a compaction costs about one more pass over the cache, which
each call's Concat already makes.
R rows, N new tokens in a step, V vocab, G kv heads, L a row's tokens, D head_dim.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError

from .ragged import PackedCache

if TYPE_CHECKING:
    from .engine import Engine

COMPACT_DEAD_FRACTION = 0.5  # compact when dead slots exceed this fraction of the cache
COMPACT_DEAD_ROWS = 8  # ... or when this many more dead rows than live ones are carried (rows of no slots)


def mixed_steps(engine: Engine) -> bool:
    """Whether a Scheduler runs mixed steps on `engine`: its graph takes ragged attention."""
    return engine.contract.ragged and engine.attention == "concat"


class MixedBatch:
    def __init__(self, engine: Engine) -> None:
        if not mixed_steps(engine):
            raise MixtralTrtError(f"{engine.path}: mixed steps need an engine built with --ragged")
        self.engine = engine
        self.cache = PackedCache.empty(engine.contract, 0)
        self._row: dict[Hashable, int] = {}  # holder -> its row in `cache`
        self.compactions = 0

    def __contains__(self, holder: Hashable) -> bool:
        return holder in self._row

    def __len__(self) -> int:
        """Live rows."""
        return len(self._row)

    def length(self, holder: Hashable) -> int:
        """The holder's tokens in the cache: the position of its next one."""
        return int(self.cache.lengths[self._row[holder]])

    # ---- rows joining and leaving --------------------------------------------------------------------------
    def join(self, holder: Hashable, kv: tuple[Sequence[Any], Sequence[Any]] | None = None) -> None:
        """A new row for `holder`: empty, or holding `kv` (per cache input [G, L, D], `PrefixCache` blocks)."""
        if holder in self._row:
            raise MixtralTrtError("mixed batch: this request already holds a row")
        self.cache = self.cache.with_rows(1) if kv is None else self.cache.joined(*kv)
        self._row[holder] = self.cache.rows - 1

    def fork(self, holder: Hashable, into: Hashable) -> None:
        """A new row for `into` holding a copy of `holder`'s tokens (another sample of the same prompt)."""
        self.join(into, self.cache.row_kv(self._row[holder]))

    def rename(self, holder: Hashable, into: Hashable) -> None:
        """`holder`'s row now belongs to `into`."""
        self._row[into] = self._row.pop(holder)

    def kv(self, holder: Hashable) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The holder's tokens, oldest first: per cache input [G, L, D] (what a prefix cache stores)."""
        return self.cache.row_kv(self._row[holder])  # a copy of its slots alone

    def leave(self, holders: Sequence[Hashable]) -> None:
        """The holders' rows are dead; the cache is compacted when dead slots or rows dominate (module doc)."""
        rows = [self._row.pop(h) for h in holders if h in self._row]
        if not rows:
            return
        if not self._row:  # nobody left: start over (nothing to copy)
            self.cache = PackedCache.empty(self.engine.contract, 0)
            return
        self.cache = self.cache.without(rows)
        dead_rows, live_rows = self.cache.rows - len(self._row), len(self._row)
        if self.cache.dead > COMPACT_DEAD_FRACTION * self.cache.length or dead_rows > live_rows + COMPACT_DEAD_ROWS:
            self._compact()

    def _compact(self) -> None:
        holders = sorted(self._row, key=self._row.__getitem__)
        self.cache = self.cache.compacted([self._row[h] for h in holders])
        self._row = {h: r for r, h in enumerate(holders)}
        self.compactions += 1

    def reset(self) -> None:
        """Drop every row (after a failed call: the cache is not to be trusted)."""
        self.cache = PackedCache.empty(self.engine.contract, 0)
        self._row.clear()

    # ---- one step --------------------------------------------------------------------------------------
    def step(self, new: dict[Hashable, Sequence[int]], outputs: Sequence[str] = ("logits",)
             ) -> tuple[dict[Hashable, np.ndarray], dict[str, Any]]:
        """ONE engine call: each holder in `new` feeds its tokens (at least one in all). Returns each holder's logits
        [n, V] (its new tokens' rows) and the call's other outputs by contract role (e.g. router_logits by name)."""
        contract = self.engine.contract
        tokens: list[Sequence[int]] = [[] for _ in range(self.cache.rows)]
        for holder, ids in new.items():
            tokens[self._row[holder]] = ids
        feeds, owner, pos = self.cache.feeds(contract, tokens)
        names = [n for role in outputs for n in contract.names(role)]
        cache_names = contract.cache_names("key") + contract.cache_names("value")
        out = self.engine.runner.run(feeds, names + cache_names)
        self.cache = self.cache.advanced(contract, out, owner, pos)
        logits = out["logits"][0]  # [N, V]
        mine = {holder: logits[owner == self._row[holder]] for holder in new}
        return mine, {n: out[n] for n in names if n != "logits"}
