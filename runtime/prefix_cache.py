"""Automatic prefix caching: the KV of token prefixes kept in fixed-size blocks, reused by any later prompt
that starts with the same tokens (the next turn of a chat, a shared system prompt, a tools block).

A block holds `block_size` consecutive tokens' keys and values for every layer. Its key is a hash chain:
the key of block i is sha256(key of block i-1 + block i's token ids), and block 0 chains from the engine's
identity (backend, dtype, the sha256 of its artifacts), so a key names every token before it and the
model that computed them. A prompt's cached prefix is its longest run of stored blocks from the start,
leaving at least one token to compute (its logits give the first new token).

Blocks live in a bounded store (`budget_bytes`): least recently used first out, never a block a running
row holds (`match` pins the blocks a request starts from until `release`). A chain is touched from its
last block to its first, so a prefix's tail goes before its head and no block is dropped while a longer
chain still reaches through it. Blocks are host numpy arrays (torch tensors on their CUDA device for
TensorRT engines, whose cache lives there); both cache kinds are served: the canonical graph's concat
KVCache and the shared right-padded buffer of GroupQueryAttention engines (CPU). Tensor-parallel engines
(the cache lives in the rank processes) and CUDA GroupQueryAttention caches are refused.
G kv heads, L tokens, D head_dim, N block_size.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.common.backends import get_backend
from mixtral_trt.common.errors import MixtralTrtError

from .gqa_cache import GQACache
from .kv_cache import KVCache, token_bytes

if TYPE_CHECKING:
    from .engine import Engine

GIB = 1 << 30
DEFAULT_BLOCK_SIZE = 16
DEFAULT_BUDGET_GB = 1.0  # the Scheduler's budget when none is given (at most a quarter of the free memory)


@dataclass
class Block:
    key: bytes
    keys: list[Any]  # per layer [G, N, D]
    values: list[Any]
    pins: int = 0  # running requests that started from this block


@dataclass
class Match:
    """The stored blocks a prompt starts with (pinned until `PrefixCache.release`)."""

    blocks: list[Block] = field(default_factory=list)
    released: bool = False

    @property
    def tokens(self) -> int:
        return sum(int(b.keys[0].shape[1]) for b in self.blocks)


@dataclass
class PrefixStats:
    queried_tokens: int = 0  # prompt tokens looked up
    hit_tokens: int = 0  # of those, served from stored blocks
    stored_blocks: int = 0
    evicted_blocks: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


def unsupported(engine: Engine) -> str | None:
    """Why `engine` cannot keep a prefix cache, in one line, or None."""
    if "tensor_parallel" in engine.manifest.backend_info:
        return ("prefix caching is not supported on tensor-parallel engines (their KV cache lives in the "
                "rank processes)")
    if engine.attention == "gqa" and engine.runner.device == "cuda":
        return "prefix caching is not supported on a CUDA GroupQueryAttention engine (its cache is not row-editable)"
    return None


def block_device(engine: Engine) -> str:
    """Where blocks live: TensorRT engines' caches are CUDA torch tensors (kept there), the others' host arrays."""
    return "cuda" if get_backend(engine.backend, "backend").runner == "trt" else "host"


def available_bytes(device: str) -> int:
    """Free memory where the blocks would live: the host's MemAvailable, or the CUDA device's free bytes."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def engine_identity(engine: Engine) -> bytes:
    """The root of every hash chain: backend, dtype and the sha256 of every artifact of the engine."""
    artifacts = sorted(engine.manifest.artifacts.items())
    parts = [engine.backend, engine.dtype, *(f"{name}:{a.sha256}" for name, a in artifacts)]
    return hashlib.sha256("\n".join(parts).encode()).digest()


def _locked(method):
    """The method under the store's lock."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return run


class PrefixCache:
    def __init__(self, engine: Engine, gb: float, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        """A store of at most `gb` GiB of KV blocks of `block_size` tokens for `engine`'s prompts."""
        if (why := unsupported(engine)) is not None:
            raise MixtralTrtError(why)
        if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size < 1:
            raise MixtralTrtError(f"prefix cache block_size={block_size!r}: must be an integer >= 1")
        if isinstance(gb, bool) or not isinstance(gb, int | float | np.number) or not np.isfinite(gb) or gb <= 0:
            raise MixtralTrtError(f"prefix_cache_gb={gb!r}: must be a number > 0 (GiB)")
        self.device = block_device(engine)
        free = available_bytes(self.device)
        if gb * GIB > free:
            raise MixtralTrtError(f"prefix_cache_gb={gb:g}: larger than the {free / GIB:.1f} GiB of "
                                  f"{'GPU' if self.device == 'cuda' else 'host'} memory available")
        self.engine = engine
        self.block_size = int(block_size)
        self.block_bytes = block_size * token_bytes(engine.contract)  # an int8 cache's blocks hold codes + scales
        self.budget_bytes = int(gb * GIB)
        if self.block_bytes > self.budget_bytes:
            raise MixtralTrtError(f"prefix_cache_gb={gb:g}: smaller than one block of {block_size} tokens "
                                  f"({self.block_bytes} bytes)")
        self.identity = engine_identity(engine)
        self.stats = PrefixStats()
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()  # an Engine's cache may serve generate() and a Scheduler's thread

    # ---- facts ------------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return len(self._blocks) * self.block_bytes

    @property
    def capacity_blocks(self) -> int:
        return self.budget_bytes // self.block_bytes

    def __len__(self) -> int:
        return len(self._blocks)

    def chain(self, tokens: Sequence[int]) -> list[bytes]:
        """The key of every full block of `tokens`."""
        keys, key, n = [], self.identity, self.block_size
        for start in range(0, len(tokens) - n + 1, n):
            key = hashlib.sha256(key + np.asarray(tokens[start : start + n], np.int64).tobytes()).digest()
            keys.append(key)
        return keys

    # ---- lookup -----------------------------------------------------------------------------------
    @_locked
    def match(self, tokens: Sequence[int]) -> Match:
        """The longest stored prefix of `tokens` that leaves at least one token to compute, pinned."""
        usable = (len(tokens) - 1) // self.block_size
        found = []
        for key in self.chain(tokens[: usable * self.block_size]):
            block = self._blocks.get(key)
            if block is None:
                break
            found.append(block)
        for block in found:
            block.pins += 1
        self._touch(found)
        self.stats.queried_tokens += len(tokens)
        match = Match(found)
        self.stats.hit_tokens += match.tokens
        return match

    @_locked
    def release(self, match: Match | None) -> None:
        """The request that started from `match` no longer runs: its blocks may be evicted again."""
        if match is None or match.released:
            return
        match.released = True
        for block in match.blocks:
            block.pins -= 1

    def cache(self, match: Match) -> KVCache | GQACache:
        """A batch-1 cache of the engine's kind holding the matched tokens."""
        if not match.blocks:
            raise MixtralTrtError("prefix cache: an empty match has no cache")
        layers = len(match.blocks[0].keys)
        keys = [self._cat([b.keys[i] for b in match.blocks]) for i in range(layers)]  # per layer [G, L, D]
        values = [self._cat([b.values[i] for b in match.blocks]) for i in range(layers)]
        if self.engine.attention == "gqa":
            return GQACache.from_kv(self.engine.contract, keys, values)
        return KVCache.from_kv(keys, values)

    # ---- storing ----------------------------------------------------------------------------------
    @_locked
    def store(self, tokens: Sequence[int], keys: Sequence[Any], values: Sequence[Any]) -> int:
        """Keep the full blocks of `tokens` whose per-layer keys / values [G, L, D] (L = len(tokens)) are
        given, evicting least recently used unpinned blocks for room; returns the blocks newly stored.
        Stops early when every stored block is pinned (running requests hold them all)."""
        if int(keys[0].shape[1]) != len(tokens):
            raise MixtralTrtError(f"prefix cache: {len(tokens)} tokens but {int(keys[0].shape[1])} cached slots")
        n, chain, added = self.block_size, [], 0
        try:
            for i, key in enumerate(self.chain(tokens)):
                block = self._blocks.get(key)
                if block is None:
                    if not self._make_room():
                        break
                    s = slice(i * n, (i + 1) * n)
                    block = Block(key, [self._copy(k[:, s]) for k in keys], [self._copy(v[:, s]) for v in values])
                    self._blocks[key] = block
                    added += 1
                block.pins += 1  # held while this chain is stored: its own head is never evicted for its tail
                chain.append(block)
        finally:
            for block in chain:
                block.pins -= 1
            self._touch(chain)
        self.stats.stored_blocks += added
        return added

    @_locked
    def clear(self) -> None:
        """Drop every unpinned block."""
        for key in [k for k, b in self._blocks.items() if not b.pins]:
            del self._blocks[key]

    def _make_room(self) -> bool:
        if len(self._blocks) < self.capacity_blocks:
            return True
        victim = next((k for k, b in self._blocks.items() if not b.pins), None)
        if victim is None:
            return False
        del self._blocks[victim]
        self.stats.evicted_blocks += 1
        return True

    def _touch(self, chain: list[Block]) -> None:
        """Most recently used: the chain's head last, so its tail is evicted first."""
        for block in reversed(chain):
            self._blocks.move_to_end(block.key)

    def _copy(self, a: Any) -> Any:
        if type(a).__module__.startswith("torch"):
            return a.clone()
        return np.array(a, order="C", copy=True)

    @staticmethod
    def _cat(parts: list[Any]) -> Any:
        if type(parts[0]).__module__.startswith("torch"):
            import torch

            return torch.cat(parts, dim=1)
        return np.concatenate(parts, axis=1)
