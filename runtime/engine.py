"""`Engine`: the same surface for every backend — full-sequence logits, cached forward, generation.

B batch, T new tokens, P cached tokens, S = P + T, V vocab.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixtral_trt.exporter.contract import GraphContract
from mixtral_trt.mixtral_ref.config import MixtralConfig
from mixtral_trt.mixtral_ref.errors import MixtralTrtError

from .backends import Runner
from .kv_cache import KVCache
from .manifest import Manifest


class Engine:
    def __init__(self, path: Path, manifest: Manifest, runner: Runner) -> None:
        self.path = path
        self.manifest = manifest
        self.runner = runner

    # ---- facts ------------------------------------------------------------------------------------
    @property
    def contract(self) -> GraphContract:
        return self.manifest.contract

    @property
    def config(self) -> MixtralConfig:
        return self.contract.config

    @property
    def backend(self) -> str:
        return self.manifest.backend

    @property
    def dtype(self) -> str:
        return self.contract.dtype

    @property
    def max_seq(self) -> int:
        return self.contract.max_seq

    @property
    def max_batch(self) -> int:
        return self.contract.max_batch

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, backend={self.backend}, dtype={self.dtype}, device={self.runner.device})"

    # ---- checks -----------------------------------------------------------------------------------
    def check_ids(self, input_ids: np.ndarray, past: int = 0) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
            raise MixtralTrtError(f"input_ids: expected a non-empty [batch, seq] array, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise MixtralTrtError(f"input_ids: expected integer token ids, got {ids.dtype}")
        bad = (ids < 0) | (ids >= self.config.vocab_size)
        if bad.any():
            raise MixtralTrtError(f"input_ids: token id {int(ids[bad][0])} is outside the vocabulary "
                                  f"[0, {self.config.vocab_size})")
        if ids.shape[0] > self.max_batch:
            raise MixtralTrtError(f"input_ids: batch {ids.shape[0]} exceeds the engine's max batch {self.max_batch}")
        if past + ids.shape[1] > self.max_seq:
            raise MixtralTrtError(f"input_ids: {past} cached + {ids.shape[1]} new tokens exceed the engine's "
                                  f"context of {self.max_seq} tokens")
        return ids.astype(np.int64)

    # ---- compute ----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: np.ndarray,  # [B, T]
        cache: KVCache | None = None,
        attention_mask: np.ndarray | None = None,  # [B, S], 1 = real token
        position_ids: np.ndarray | None = None,  # [B, T]
        outputs: tuple[str, ...] = ("logits",),  # contract roles
    ) -> tuple[dict[str, np.ndarray], KVCache]:
        """One engine call on top of `cache`; returns the requested outputs (by name) and the new cache."""
        cache = cache if cache is not None else KVCache.empty(self.contract, np.asarray(input_ids).shape[0])
        ids = self.check_ids(input_ids, cache.length)
        b, t = ids.shape
        if cache.batch != b:
            raise MixtralTrtError(f"input_ids: batch {b} does not match the cache's batch {cache.batch}")
        p = cache.length
        if attention_mask is None:
            attention_mask = np.ones((b, p + t), np.int64)
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(p, p + t, dtype=np.int64), (b, t))
        feeds = {"input_ids": ids, "attention_mask": np.ascontiguousarray(attention_mask, np.int64),
                 "position_ids": np.ascontiguousarray(position_ids, np.int64), **cache.feeds(self.contract)}
        names = [n for role in outputs for n in self.contract.names(role)]
        cache_names = self.contract.names("present_key") + self.contract.names("present_value")
        result = self.runner.run(feeds, names + cache_names)
        return {n: result[n] for n in names}, KVCache.from_outputs(result, self.contract)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Full-sequence scoring: input_ids [B, T] -> float32 logits [B, T, V]."""
        out, _ = self.forward(input_ids)
        return out["logits"]

    def generate(self, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None = None) -> list[int]:
        """Greedy decoding with the KV cache carried between steps; returns the new tokens only."""
        if max_new_tokens < 0:
            raise MixtralTrtError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        ids = np.asarray([list(prompt_ids)], dtype=np.int64)
        if ids.shape[1] + max_new_tokens > self.max_seq:
            raise MixtralTrtError(f"prompt of {ids.shape[1]} tokens + {max_new_tokens} new tokens exceeds the "
                                  f"engine's context of {self.max_seq} tokens")
        new: list[int] = []
        cache = None
        while len(new) < max_new_tokens:
            out, cache = self.forward(ids, cache)
            token = int(out["logits"][0, -1].argmax())
            new.append(token)
            if eos_id is not None and token == eos_id:
                break
            ids = np.asarray([[token]], dtype=np.int64)
        return new
