"""The KV cache of a GroupQueryAttention engine (backend ort-gqa) and the call that keeps it.

One buffer per layer key and value, [B, G, C, D], is both the past input and the present output of every
call: GroupQueryAttention writes the new tokens in place, so nothing is copied per step (the canonical
graph's Concat copies the whole cache every call). C, the capacity, grows by doubling up to the engine's
max_seq (CPU), or is max_seq from the start (CUDA).

The op's layout is right-padded: row b's tokens sit in slots [0, L_b) and a token's position is its slot.
`Engine.forward` keeps its meaning (a key-padding mask over cached + new tokens, left-padded batches, rows
that add nothing in a step): `gqa_call` moves each row's real new tokens to the front of the call, feeds the
mask the op reads (row b: L_b + new ones; seqlens_k = sum - 1, total = width), and puts the outputs back
where the caller's tokens were. A row with no new token still feeds one (the op takes one per row) that
lands in slot L_b and is overwritten by the row's next token: its length does not move.
Limit of the op without per-row query lengths: a call of several tokens on a non-empty cache is batch 1.
B batch, G kv heads, C capacity, D head_dim, T new tokens (the caller's), S tokens fed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.dtypes import numpy_dtype
from mixtral_trt.common.errors import MixtralTrtError

MIN_CAPACITY = 256
PAD_ID = 0  # the token fed where a row has none; never attended to


@dataclass
class GQACache:
    keys: list[Any]  # per layer OrtValue [B, G, C, D], shared by past and present
    values: list[Any]
    lengths: np.ndarray  # [B] int64: row b's tokens are slots [0, L_b)
    length: int  # the caller's cached width P (attention_mask columns before the new tokens), >= max L_b
    max_seq: int
    device: str = "cpu"
    arrays: list[np.ndarray] = field(default_factory=list)  # CPU: the numpy storage the OrtValues point into
    logits: tuple[np.ndarray, Any] | None = field(default=None, repr=False)  # logits_buffer's last buffer

    @classmethod
    def empty(cls, contract: GraphContract, batch: int, device: str = "cpu") -> GQACache:
        cache = cls([], [], np.zeros(batch, np.int64), 0, contract.max_seq, device)
        cache._allocate(contract, batch, contract.max_seq if device == "cuda" else min(MIN_CAPACITY,
                                                                                       contract.max_seq))
        return cache

    @property
    def batch(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def capacity(self) -> int:
        shape = self.keys[0].shape()
        return int(shape[2])

    def _allocate(self, contract: GraphContract, batch: int, capacity: int) -> None:
        """Fresh buffers of `capacity` slots; on CPU the old tokens are copied over."""
        import onnxruntime as ort

        cfg = contract.config
        shape = (batch, cfg.num_kv_heads, capacity, cfg.head_dim)
        dtype = numpy_dtype(next(t.dtype for t in contract.inputs if t.role == "past_key"))
        if self.device == "cuda":
            make = [ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0)
                    for _ in range(2 * cfg.num_layers)]
            self.keys, self.values, self.arrays = make[::2], make[1::2], []
            return
        old = self.arrays
        self.arrays = [np.zeros(shape, dtype) for _ in range(2 * cfg.num_layers)]
        for new, previous in zip(self.arrays, old, strict=False):
            new[:, :, : previous.shape[2]] = previous
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        self.keys, self.values = values[::2], values[1::2]

    def reserve(self, contract: GraphContract, slots: int) -> None:
        """Make room for `slots` slots (doubling, up to max_seq)."""
        if slots <= self.capacity:
            return
        if slots > self.max_seq or self.device == "cuda":
            raise MixtralTrtError(f"the KV cache needs {slots} slots; the engine's context is {self.max_seq}")
        self._allocate(contract, self.batch, min(self.max_seq, max(slots, 2 * self.capacity)))

    # ---- row operations (the surface of KVCache's, for a scheduler's running batch; CPU only) ----------
    @property
    def attention_mask(self) -> np.ndarray:
        """[B, P] int64 in the caller's left-padded view: row b's L_b tokens are the last L_b columns."""
        return (np.arange(self.length)[None, :] >= (self.length - self.lengths)[:, None]).astype(np.int64)

    def select(self, rows: list[int]) -> GQACache:
        """A cache of the given rows (CPU), in that order."""
        self._cpu_only("selecting rows of")
        cache = GQACache([], [], self.lengths[list(rows)].copy(), self.length, self.max_seq, self.device)
        cache._adopt([np.ascontiguousarray(a[list(rows)]) for a in self.arrays])
        return cache

    @classmethod
    def concat(cls, caches: list[GQACache]) -> GQACache:
        """The rows of every cache, in order, in buffers of the largest capacity (CPU); P is the largest."""
        if len(caches) == 1:
            return caches[0]
        for c in caches:
            c._cpu_only("joining rows of")
        capacity = max(c.capacity for c in caches)
        arrays = []
        for i in range(len(caches[0].arrays)):
            parts = [np.pad(c.arrays[i], ((0, 0), (0, 0), (0, capacity - c.capacity), (0, 0))) for c in caches]
            arrays.append(np.concatenate(parts, axis=0))
        first = caches[0]
        cache = cls([], [], np.concatenate([c.lengths for c in caches]), max(c.length for c in caches),
                    first.max_seq, first.device)
        cache._adopt(arrays)
        return cache

    def trim(self) -> GQACache:
        """Forget the padding every row has in front (in the caller's view, P = the longest row)."""
        longest = int(self.lengths.max(initial=0))
        if longest == self.length:
            return self
        cache = GQACache(self.keys, self.values, self.lengths, longest, self.max_seq, self.device)
        cache.arrays = self.arrays
        return cache

    def editable(self) -> GQACache:
        """Itself: its numpy buffers already slice (KVCache's method of the same name)."""
        return self

    # ---- one row's tokens (what a prefix cache keeps; CPU) --------------------------------------------
    def row_kv(self, row: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Row `row`'s tokens: per layer keys and values [G, L, D] (views of the buffers)."""
        self._cpu_only("reading rows of")
        n = int(self.lengths[row])
        return [a[row, :, :n] for a in self.arrays[::2]], [a[row, :, :n] for a in self.arrays[1::2]]

    @classmethod
    def from_kv(cls, contract: GraphContract, keys: list[np.ndarray], values: list[np.ndarray]) -> GQACache:
        """A batch-1 CPU cache holding one row's tokens: per layer [G, L, D] keys and values."""
        n = int(keys[0].shape[1])
        capacity = min(contract.max_seq, max(MIN_CAPACITY, n))
        arrays = []
        for k, v in zip(keys, values, strict=True):
            for a in (k, v):
                buffer = np.zeros((1, a.shape[0], capacity, a.shape[2]), a.dtype)  # [1, G, C, D]
                buffer[0, :, :n] = a
                arrays.append(buffer)
        cache = cls([], [], np.array([n], np.int64), n, contract.max_seq)
        cache._adopt(arrays)
        return cache

    def _adopt(self, arrays: list[np.ndarray]) -> None:
        import onnxruntime as ort

        self.arrays = arrays
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        self.keys, self.values = values[::2], values[1::2]

    def logits_buffer(self, contract: GraphContract, batch: int, seq: int) -> tuple[np.ndarray, Any] | None:
        """A CPU cache's logits output [B, S, V] for the next call, kept between calls of one shape: (the numpy
        array, the OrtValue over it). None on CUDA (ONNX Runtime allocates there, the logits are copied out)."""
        if self.device == "cuda":
            return None
        shape = (batch, seq, contract.config.vocab_size)
        if self.logits is None or self.logits[0].shape != shape:
            import onnxruntime as ort

            info = next(i for i in contract.outputs if i.role == "logits")
            array = np.empty(shape, numpy_dtype(info.dtype))
            self.logits = (array, ort.OrtValue.ortvalue_from_numpy(array))
        return self.logits

    def _cpu_only(self, what: str) -> None:
        if self.device == "cuda":
            raise MixtralTrtError(f"{what} a CUDA GroupQueryAttention cache is not supported")

    def buffers(self, contract: GraphContract) -> dict[str, Any]:
        """Name -> OrtValue for the past inputs and, under the present names, the same buffers."""
        out = {}
        for prefix_in, prefix_out, arrays in (("past_key", "present_key", self.keys),
                                              ("past_value", "present_value", self.values)):
            for n_in, n_out, value in zip(contract.names(prefix_in, "inputs"), contract.names(prefix_out),
                                          arrays, strict=True):
                out[n_in] = out[n_out] = value
        return out


def _check(cache: GQACache, mask: np.ndarray, position_ids: np.ndarray | None, t: int) -> np.ndarray:
    """The [B, T] bool mask of real new tokens, after checking the call against the cache."""
    p = cache.length
    cached = mask[:, :p].sum(axis=1)
    if not np.array_equal(cached, cache.lengths):
        raise MixtralTrtError(f"attention_mask: its cached part marks {cached.tolist()} tokens per row, the "
                              f"cache holds {cache.lengths.tolist()} (a GroupQueryAttention engine's cache keeps "
                              "each row's real tokens only)")
    new = mask[:, p:].astype(bool)  # [B, T]
    counts = new.sum(axis=1)
    if cache.lengths.max(initial=0) > 0 and counts.max(initial=0) > 1 and cache.batch > 1:
        raise MixtralTrtError(f"input_ids: {t} new tokens per row on a non-empty cache at batch {cache.batch}: "
                              "GroupQueryAttention engines take several tokens on a cache at batch 1 only")
    if position_ids is not None:
        for b in range(cache.batch):
            expected = cache.lengths[b] + np.arange(counts[b])
            if not np.array_equal(position_ids[b][new[b]], expected):
                raise MixtralTrtError(f"position_ids: row {b} has {position_ids[b][new[b]].tolist()} at its "
                                      f"tokens; a GroupQueryAttention engine places them at {expected.tolist()} "
                                      "(each token's position is its slot)")
    return new


def gqa_call(runner, contract: GraphContract, ids: np.ndarray, cache: GQACache, mask: np.ndarray | None,
             position_ids: np.ndarray | None, names: list[str],
             keep: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], GQACache]:
    """One engine call with the caller's ids [B, T] / mask [B, P + T] (None: the cache's own mask and T real
    tokens per row); outputs back in the caller's layout. `keep`: the logits_to_keep feed, used only where every
    row feeds all its tokens (its last columns are then the caller's; otherwise every position comes back)."""
    b, t = ids.shape
    if mask is None:  # every new token is real (Engine.forward given no mask nor positions): nothing to check
        if t > 1 and b > 1 and cache.lengths.max(initial=0) > 0:
            raise MixtralTrtError(f"input_ids: {t} new tokens per row on a non-empty cache at batch {b}: "
                                  "GroupQueryAttention engines take several tokens on a cache at batch 1 only")
        new, counts, dense = None, np.full(b, t, np.int64), True
    else:
        new = _check(cache, mask, position_ids, t)  # [B, T]
        counts = new.sum(axis=1)  # real new tokens per row
        dense = bool(new.all())  # every row feeds all its T tokens (decode of a full batch, a prefill)
    fed = np.maximum(counts, 1)  # a row with none feeds one dummy token
    s = int(fed.max())
    if dense:
        step_ids = ids
    else:
        step_ids = np.full((b, s), PAD_ID, np.int64)  # [B, S] right-padded
        for row in range(b):
            step_ids[row, : counts[row]] = ids[row, new[row]]
    ends = cache.lengths + fed  # slots in use after the call, dummies included
    width = int(ends.max())
    step_mask = (np.arange(width)[None, :] < ends[:, None]).astype(np.int64)  # [B, width]
    cache.reserve(contract, width)
    buffers = cache.buffers(contract)
    cache_outputs = contract.names("present_key") + contract.names("present_value")
    feeds = {"input_ids": step_ids, "attention_mask": step_mask,
             **{n: v for n, v in buffers.items() if n.startswith("past_key_values.")}}
    if dense and keep:
        feeds.update(keep)
    bound = {n: buffers[n] for n in cache_outputs}
    # a decode step's logits [B, 1, V]: written in place by the run into the cache's buffer, copied out below (a
    # prefill's, B x S x V, are ONNX Runtime's allocation, not kept between calls)
    logits = cache.logits_buffer(contract, b, s) if s == 1 and names == contract.names("logits") else None
    if logits is not None:
        bound[names[0]] = logits[1]
    result = runner.run(feeds, names + cache_outputs, bound)
    flat = {info.name for info in contract.outputs if info.shape and info.shape[0] == "batch * seq"}
    outputs = {}
    for name in names:
        if logits is not None:
            outputs[name] = logits[0].copy() if dense else _to_caller(logits[0], new, counts, s, name in flat)
        else:
            out = np.asarray(result[name])
            outputs[name] = out if dense else _to_caller(out, new, counts, s, name in flat)
    cache.lengths = cache.lengths + counts
    cache.length += t
    return outputs, cache


def _to_caller(out: np.ndarray, new: np.ndarray, counts: np.ndarray, s: int, flat: bool) -> np.ndarray:
    """[B, S, ...] (or [B*S, ...] when `flat`) fed layout -> the caller's [B, T, ...] (or [B*T, ...]); zeros
    where the caller has padding."""
    b, t = new.shape
    per_row = out.reshape(b, s, *out.shape[1:]) if flat else out
    back = np.zeros((b, t, *per_row.shape[2:]), per_row.dtype)
    for row in range(b):
        back[row, new[row]] = per_row[row, : counts[row]]
    return back.reshape(b * t, *back.shape[2:]) if flat else back
