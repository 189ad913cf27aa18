"""`Engine`: the same surface for every backend — full-sequence logits, cached forward, generation, chat.

Every call is validated before the backend sees it (ids inside the vocabulary, batch and lengths inside
what the engine was built for), and a call longer than the backend takes at once (a TensorRT prefill
profile's maximum) runs as consecutive chunks over the KV cache.
B batch, T new tokens, P cached tokens, S = P + T, V vocab.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.chat.tokenizer import Tokenizer
from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.contract import ATTENTION_VISIBLE, LOGITS_TO_KEEP, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest

from .backends import Runner
from .chat import chat_prompt
from .chat_completion import finish_chat, prepare_chat, response_constraint, stream_chat
from .generation import stream_batch
from .gqa_cache import GQACache, gqa_call
from .kv_cache import KVCache
from .prefix_cache import DEFAULT_BLOCK_SIZE, PrefixCache
from .prompts import prompt_batch
from .ragged import padded_visibility
from .reply import Completion, StreamEvent
from .sampling import SamplingParams

if TYPE_CHECKING:

    from .chat_completion import ChatChunk, ChatCompletion

Prompt = str | Sequence[int]
ResponseFormat = Mapping[str, Any] | None


class Engine:
    def __init__(self, path: Path, manifest: Manifest, runner: Runner, tokenizer_file: Path | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.runner = runner
        self._tokenizer_file = tokenizer_file
        self.prefix_cache: PrefixCache | None = None  # enable_prefix_cache

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

    @property
    def max_tokens_per_call(self) -> int:
        """The most new tokens one backend call takes (a TensorRT prefill profile's maximum)."""
        return int(self.manifest.backend_info.get("max_tokens_per_call") or self.max_seq)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer copied into the engine directory by export and build (or given to `runtime.load`)."""
        tok = Tokenizer(self._tokenizer_file) if self._tokenizer_file else Tokenizer.from_checkpoint(self.path)
        if tok.vocab_size != self.config.vocab_size:
            raise MixtralTrtError(f"{tok.path}: {tok.vocab_size} tokens, but the engine's vocabulary has "
                                  f"{self.config.vocab_size}: not this model's tokenizer")
        return tok

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, backend={self.backend}, dtype={self.dtype}, device={self.runner.device})"

    # ---- checks -----------------------------------------------------------------------------------
    def check_ids(self, input_ids: np.ndarray, past: int = 0, what: str = "input_ids") -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
            raise MixtralTrtError(f"{what}: expected a non-empty [batch, seq] array, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise MixtralTrtError(f"{what}: expected integer token ids, got {ids.dtype}")
        bad = (ids < 0) | (ids >= self.config.vocab_size)
        if bad.any():
            raise MixtralTrtError(f"{what}: token id {int(ids[bad][0])} is outside the vocabulary "
                                  f"[0, {self.config.vocab_size})")
        if ids.shape[0] > self.max_batch:
            raise MixtralTrtError(f"{what}: batch {ids.shape[0]} exceeds the engine's max batch {self.max_batch}")
        if past + ids.shape[1] > self.max_seq:
            raise MixtralTrtError(f"{what}: {past} cached + {ids.shape[1]} new tokens exceed the engine's "
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
        logits_to_keep: int = 0,
    ) -> tuple[dict[str, np.ndarray], KVCache]:
        """One engine call on top of `cache`; returns the requested outputs (by name) and the new cache.

        `logits_to_keep` N > 0: the logits of the last N columns only, [B, N, V] (out[:, -N:] of the whole
        result: a prompt's prefill needs its last position's); the LM head then computes only those where the
        engine's graph takes the input (exporter/lowering/logits_to_keep.py: ONNX Runtime engines, in one call).

        Without `attention_mask`, the cache's own mask (the padding it carries) is extended by the new
        tokens; without `position_ids`, each row's positions continue from its count of real tokens.
        On a GroupQueryAttention engine (`attention == "gqa"`) the cache is a GQACache and position_ids, when
        given, must be each row's count of real tokens before the token (what left-padded batches use)."""
        cache = cache if cache is not None else self.empty_cache(np.asarray(input_ids).shape[0])
        ids = self.check_ids(input_ids, cache.length)
        b, t = ids.shape
        if cache.batch != b:
            raise MixtralTrtError(f"input_ids: batch {b} does not match the cache's batch {cache.batch}")
        p = cache.length
        names = [n for role in outputs for n in self.contract.names(role)]
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int | np.integer) or logits_to_keep < 0:
            raise MixtralTrtError(f"logits_to_keep: expected a count of positions >= 0, got {logits_to_keep!r}")
        keep = {LOGITS_TO_KEEP: np.array(logits_to_keep, np.int64)} if (
            0 < logits_to_keep < t <= self.max_tokens_per_call and "logits" in outputs
            and LOGITS_TO_KEEP in getattr(self.runner, "input_names", ())) else {}
        implicit = attention_mask is None and position_ids is None
        if implicit and self.attention == "gqa" and t <= self.max_tokens_per_call:
            # every new token real, each row's positions its slots: no mask to build and check against the cache
            return self._kept(gqa_call(self.runner, self.contract, ids, cache, None, None, names, keep),
                              logits_to_keep)
        if attention_mask is None:  # the cache's own mask, then the new tokens
            mask = np.concatenate([cache.attention_mask, np.ones((b, t), np.int64)], axis=1)
        else:
            mask = np.asarray(attention_mask, np.int64)
        if mask.shape != (b, p + t):
            raise MixtralTrtError(f"attention_mask: expected shape {(b, p + t)} (cached + new tokens), "
                                  f"got {mask.shape}")
        explicit_positions = position_ids is not None
        if position_ids is None:  # each row counts its real tokens only
            position_ids = cache.lengths[:, None] + np.arange(t, dtype=np.int64)
        position_ids = np.asarray(position_ids, np.int64)
        if position_ids.shape != (b, t):
            raise MixtralTrtError(f"position_ids: expected shape {(b, t)}, got {position_ids.shape}")
        chunk = self.max_tokens_per_call
        pieces: list[dict[str, np.ndarray]] = []
        for start in range(0, t, chunk):  # [B, C] chunks when the backend takes fewer than T tokens at once
            end = min(t, start + chunk)
            positions = position_ids[:, start:end] if explicit_positions or self.attention == "concat" else None
            got, cache = self._call(ids[:, start:end], cache, mask[:, : p + end], positions, names, keep)
            pieces.append(got)
        if len(pieces) == 1:
            return self._kept((pieces[0], cache), logits_to_keep)
        whole = {n: np.concatenate([piece[n] for piece in pieces], axis=1) for n in names}
        return self._kept((whole, cache), logits_to_keep)

    def _kept(self, result: tuple[dict[str, np.ndarray], KVCache | GQACache], n: int):
        """The last `n` columns of the logits (all where n is 0), whether or not the graph already cut them."""
        out, cache = result
        if n > 0:
            for name in self.contract.names("logits"):
                if name in out and out[name].ndim == 3 and out[name].shape[1] > n:
                    out[name] = out[name][:, -n:]
        return out, cache

    @property
    def attention(self) -> str:
        """How the engine's graph attends: "concat" (the canonical graph) or "gqa" (GroupQueryAttention)."""
        return self.contract.attention

    def empty_cache(self, batch: int) -> KVCache | GQACache:
        """A cache holding no tokens, of the kind this engine's graph keeps."""
        if self.attention == "gqa":
            return GQACache.empty(self.contract, batch, self.runner.device)
        return KVCache.empty(self.contract, batch)

    def _call(self, ids: np.ndarray, cache: KVCache | GQACache, mask: np.ndarray, position_ids: np.ndarray | None,
              names: list[str], keep: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], KVCache | GQACache]:
        if self.attention == "gqa":
            return gqa_call(self.runner, self.contract, ids, cache, np.asarray(mask), position_ids, names, keep)
        feeds = {"input_ids": ids, "attention_mask": np.ascontiguousarray(mask),
                 "position_ids": np.ascontiguousarray(position_ids), **cache.feeds(self.contract), **keep}
        if self.contract.ragged:  # the visibility the graph no longer computes from the mask itself
            feeds[ATTENTION_VISIBLE] = padded_visibility(np.asarray(mask), ids.shape[1], self.config.sliding_window)
        cache_names = self.contract.cache_names("key") + self.contract.cache_names("value")
        result = self.runner.run(feeds, names + cache_names)
        return {n: result[n] for n in names}, KVCache.from_outputs(result, self.contract, mask)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Full-sequence scoring: input_ids [B, T] -> float32 logits [B, T, V]."""
        out, _ = self.forward(input_ids)
        return out["logits"]

    # ---- prefix caching ---------------------------------------------------------------------------------
    def enable_prefix_cache(self, gb: float, block_size: int = DEFAULT_BLOCK_SIZE) -> PrefixCache:
        """Keep the KV of prompts in blocks of `block_size` tokens, at most `gb` GiB (least recently used
        out): `generate` / `stream` / chat calls (and a Scheduler given no budget of its own) then compute
        only what no earlier prompt of this engine started with. Raises a one-line MixtralTrtError on
        engines that cannot (tensor-parallel, CUDA GroupQueryAttention) or for a budget above free memory."""
        self.prefix_cache = PrefixCache(self, gb, block_size)
        return self.prefix_cache

    def disable_prefix_cache(self) -> None:
        self.prefix_cache = None

    # ---- generation -------------------------------------------------------------------------------
    def generate(self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | None = None,
                 response_format: ResponseFormat | Sequence[ResponseFormat] = None,
                 **sampling: Any) -> Completion | list[Completion]:
        """Complete one prompt (text or ids) or a list of them; sampling settings as in `SamplingParams`
        (greedy by default). A list gives a list of completions, each equal to its prompt's run alone.
        `response_format` ({"type": "json_object"} or {"type": "json_schema", "json_schema": {"name",
        "schema"}}) constrains the output to such JSON; a list gives one per prompt (None: free)."""
        replies, events = self._stream(prompts, params, sampling, response_format)
        for _ in events:
            pass
        done = [reply.completion() for reply in replies]
        return done if self._is_batch(prompts) else done[0]

    def stream(self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | None = None,
               response_format: ResponseFormat | Sequence[ResponseFormat] = None,
               **sampling: Any) -> Iterator[StreamEvent]:
        """Like `generate`, as an iterator of StreamEvent(index, token_id, text, finish_reason) per new id."""
        _, events = self._stream(prompts, params, sampling, response_format)
        return events

    def chat(self, messages: Sequence[Mapping[str, str]], safe_mode: bool = False, **sampling: Any) -> str:
        """The assistant's reply to role/content messages ([INST] format; `safe_mode` adds Mistral's
        guardrail system prompt)."""
        return "".join(self.chat_stream(messages, safe_mode, **sampling))

    def chat_stream(self, messages: Sequence[Mapping[str, str]], safe_mode: bool = False,
                    **sampling: Any) -> Iterator[str]:
        """The reply as text pieces while it is generated."""
        events = self.stream(chat_prompt(self.tokenizer, messages, safe_mode), **sampling)
        return (event.text for event in events if event.text)

    def chat_completion(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None,
                        tool_choice: str | Mapping[str, Any] | None = None, response_format: ResponseFormat = None,
                        safe_mode: bool = False, parallel_tool_calls: bool = True, params: SamplingParams | None = None,
                        **sampling: Any) -> ChatCompletion:
        """An OpenAI-style chat completion: `content` or `tool_calls`, `finish_reason` ("stop", "length",
        "tool_calls") and token `usage`. tools: [{"type": "function", "function": {name, description,
        parameters}}] (v3 tokenizer); tool_choice: "auto" | "none" | "any" | {"type": "function",
        "function": {"name": ...}}; response_format as in `generate`. See chat_completion.py."""
        request, params = self._chat_request(messages, tools, tool_choice, response_format, safe_mode,
                                             parallel_tool_calls, params, sampling)
        replies, events = self._stream_ids([request.prompt], params, self.tokenizer, [request.constraint])
        for _ in events:
            pass
        return finish_chat(request, replies[0].completion(), np.random.default_rng(params.seed))

    def chat_completion_stream(self, messages: Sequence[Mapping[str, Any]],
                               tools: Sequence[Mapping[str, Any]] | None = None,
                               tool_choice: str | Mapping[str, Any] | None = None,
                               response_format: ResponseFormat = None, safe_mode: bool = False,
                               parallel_tool_calls: bool = True, params: SamplingParams | None = None,
                               **sampling: Any) -> Iterator[ChatChunk]:
        """`chat_completion` as ChatChunks: content pieces while they are generated; tool calls, the
        finish_reason and usage in the last chunk."""
        request, params = self._chat_request(messages, tools, tool_choice, response_format, safe_mode,
                                             parallel_tool_calls, params, sampling)
        _, events = self._stream_ids([request.prompt], params, self.tokenizer, [request.constraint])
        return stream_chat(request, events, np.random.default_rng(params.seed))

    def _chat_request(self, messages, tools, tool_choice, response_format, safe_mode, parallel_tool_calls, params,
                      sampling):
        params = self._params(params, sampling)
        request = prepare_chat(self.tokenizer, messages, tools, tool_choice, response_format, safe_mode,
                               parallel_tool_calls)
        return request, params

    def _params(self, params: SamplingParams | None, sampling: dict[str, Any]) -> SamplingParams:
        if params is not None and sampling:
            raise MixtralTrtError(f"generate: give either params or keyword settings, not both ({', '.join(sampling)})")
        if params is not None and not isinstance(params, SamplingParams):
            raise MixtralTrtError(f"params: expected a SamplingParams, got {type(params).__name__}")
        try:
            return params or SamplingParams(**sampling)
        except TypeError as e:
            raise MixtralTrtError(f"generate: {e}") from None

    def _stream(self, prompts, params, sampling, response_format=None) -> tuple[list, Iterator[StreamEvent]]:
        params = self._params(params, sampling)
        batch, _ = prompt_batch(prompts)  # every prompt's type checked (runtime/prompts.py)
        formats = list(response_format) if isinstance(response_format, list | tuple) else [response_format] * len(batch)
        if len(formats) != len(batch):
            raise MixtralTrtError(f"response_format: {len(formats)} formats for {len(batch)} prompts")
        texts = any(isinstance(p, str) for p in batch) or any(f is not None for f in formats)
        tokenizer = self.tokenizer if texts else self._tokenizer_if_any()
        ids = [tokenizer.encode(p) if isinstance(p, str) else p for p in batch]
        factories = [response_constraint(tokenizer, f) for f in formats]
        return self._stream_ids(ids, params, tokenizer, factories)

    def _stream_ids(self, ids, params, tokenizer, factories) -> tuple[list, Iterator[StreamEvent]]:
        return stream_batch(self, ids, params, tokenizer, [f() if f is not None else None for f in factories])

    def _tokenizer_if_any(self) -> Tokenizer | None:
        try:
            return self.tokenizer
        except MixtralTrtError:
            return None

    @staticmethod
    def _is_batch(prompts: Prompt | Sequence[Prompt]) -> bool:
        return prompt_batch(prompts)[1]
