"""The graph contract: names, dtypes and symbolic shapes of the exported graph's inputs and outputs.

Written beside the ONNX model by `export`, copied into the engine manifest by `build`, and read by the
runtime, so no consumer guesses tensor names. Symbolic dims: batch, seq (new tokens), past (cached
tokens), `past + seq` (all key slots).

The debug outputs (`hidden.{i}`, `router_logits.{i}`: parity's per-layer report) are in the graph only when
export is asked for them (`export --debug-outputs`); a deployment graph carries logits and the cache only.
`extra["attention"]` says how an engine's graph attends (`build` sets it; absent = "concat"): see ATTENTION.
`extra["kv_cache"]` says how its cache stores keys and values (absent = "float"): see KV_CACHE_KINDS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import MixtralConfig
from .dtypes import DTYPES
from .errors import MixtralTrtError
from .fileio import read_json_object
from .validate import is_int

CONTRACT_FILE = "graph.json"
MODEL_FILE = "model.onnx"
EXTERNAL_DATA = MODEL_FILE + ".data"  # the weights beside it
ATTENTION_VISIBLE = "attention_visible"  # ragged attention: [batch, seq, total] bool (exporter/lowering/ragged.py)
LOGITS_TO_KEEP = "logits_to_keep"  # ORT engines' optional int64 scalar (exporter/lowering/logits_to_keep.py)
FORMAT = "mixtral-trt.graph-contract/1"
TOTAL = "past + seq"
DEBUG_ROLES = ("hidden", "router_logits")
# How an engine's graph attends, recorded in contract.extra["attention"] by build:
# - "concat": the canonical graph: the past is Concat-ed with the new keys/values each call, any padding
#   (left-padded batches through attention_mask + position_ids);
# - "gqa": com.microsoft::GroupQueryAttention: rows right-padded in the cache, positions implicit (a token's
#   position is its slot), the past may be a shared [batch, kv_heads, capacity, head_dim] buffer written in
#   place (present = past), rotary inside the op; no position_ids input.
ATTENTION_KINDS = ("concat", "gqa")
# How an engine's cache stores keys and values, recorded in contract.extra["kv_cache"] by build:
# - "float": past/present keys and values in the graph dtype;
# - "int8": `build --kv-cache int8`: the past/present keys and values are int8 codes [batch, kv_heads, slots,
#   head_dim] beside float32 scales [batch, kv_heads, slots, 1] (roles past_key_scale, present_key_scale, ...;
#   names `past_key_values.{i}.key_scale`, `present.{i}.key_scale`): symmetric, one scale per (row, kv head,
#   token) = max |x| / 127 over head_dim, written when a token enters the cache and dequantized (codes * scale)
#   wherever attention reads it.
KV_CACHE_KINDS = ("float", "int8")
KV_SCALE_DTYPE = "float32"
# `build --ragged` (a "concat" graph only) records contract.extra["ragged"] = True: the graph takes each query's
# visible keys as ATTENTION_VISIBLE [batch, seq, past + seq] (bool) in place of computing them from attention_mask,
# so one call can carry rows with different pasts and new-token counts packed as batch 1 (runtime/ragged.py);
# attention_mask stays an input (its shape is read). Engine.forward computes the visibility a padded batch means.


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy-style name: int64, float32, float16, bfloat16
    shape: tuple[int | str, ...]
    role: str  # input_ids | attention_mask | position_ids | past_key | past_value | logits | present_key
    #            | present_value | hidden | router_logits; an int8 cache adds past_key_scale | past_value_scale
    #            | present_key_scale | present_value_scale; a ragged graph attention_visible
    layer: int | None = None


@dataclass(frozen=True)
class GraphContract:
    config: MixtralConfig
    dtype: str  # fp32 | fp16 | bf16 (weights, activations, KV cache; logits are float32)
    max_batch: int
    max_seq: int  # maximum key slots (past + seq)
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_config(cls, cfg: MixtralConfig, dtype: str, max_batch: int, max_seq: int,
                   debug_outputs: bool = False) -> GraphContract:
        """The canonical graph's contract; `debug_outputs` adds hidden.{i} and router_logits.{i}."""
        if dtype not in DTYPES:
            raise MixtralTrtError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        act = DTYPES[dtype]
        kv = ("batch", cfg.num_kv_heads, "past", cfg.head_dim)
        inputs = [
            TensorInfo("input_ids", "int64", ("batch", "seq"), "input_ids"),
            TensorInfo("attention_mask", "int64", ("batch", TOTAL), "attention_mask"),
            TensorInfo("position_ids", "int64", ("batch", "seq"), "position_ids"),
        ]
        outputs = [TensorInfo("logits", "float32", ("batch", "seq", cfg.vocab_size), "logits")]
        present = (*kv[:2], TOTAL, kv[3])
        for i in range(cfg.num_layers):
            inputs += [TensorInfo(f"past_key_values.{i}.key", act, kv, "past_key", i),
                       TensorInfo(f"past_key_values.{i}.value", act, kv, "past_value", i)]
            outputs += [TensorInfo(f"present.{i}.key", act, present, "present_key", i),
                        TensorInfo(f"present.{i}.value", act, present, "present_value", i)]
        if debug_outputs:
            outputs += [TensorInfo(f"hidden.{i}", act, ("batch", "seq", cfg.hidden_size), "hidden", i)
                        for i in range(cfg.num_layers)]
            outputs += [TensorInfo(f"router_logits.{i}", act, ("batch * seq", cfg.num_experts), "router_logits",
                                   i) for i in range(cfg.num_layers)]
        return cls(cfg, dtype, max_batch, max_seq, tuple(inputs), tuple(outputs))

    def with_gqa_attention(self) -> GraphContract:
        """The contract of this graph after the GroupQueryAttention lowering: no position_ids input, the past
        of any length (the shared buffer's capacity or the cached tokens), extra["attention"] = "gqa"."""
        import dataclasses

        inputs = tuple(dataclasses.replace(t, shape=(t.shape[0], t.shape[1], "past_or_capacity", t.shape[3]))
                       if t.role in ("past_key", "past_value") else t
                       for t in self.inputs if t.role != "position_ids")
        outputs = tuple(dataclasses.replace(t, shape=(t.shape[0], t.shape[1], "present_or_capacity", t.shape[3]))
                        if t.role in ("present_key", "present_value") else t for t in self.outputs)
        return dataclasses.replace(self, inputs=inputs, outputs=outputs, extra={**self.extra, "attention": "gqa"})

    def with_ragged_attention(self) -> GraphContract:
        """The contract of this graph after the ragged-attention lowering: an ATTENTION_VISIBLE input,
        extra["ragged"] = True."""
        import dataclasses

        visible = TensorInfo(ATTENTION_VISIBLE, "bool", ("batch", "seq", TOTAL), "attention_visible")
        return dataclasses.replace(self, inputs=(*self.inputs, visible), extra={**self.extra, "ragged": True})

    @property
    def ragged(self) -> bool:
        """Whether the graph takes each query's visible keys as an input (`build --ragged`)."""
        return bool(self.extra.get("ragged", False))

    def with_int8_kv(self) -> GraphContract:
        """The contract of this graph after the int8-KV lowering (KV_CACHE_KINDS): int8 past/present keys and
        values, a float32 scale tensor [batch, kv_heads, slots, 1] beside each, extra["kv_cache"] = "int8"."""
        import dataclasses

        def int8(tensors: tuple[TensorInfo, ...], prefix: str) -> tuple[TensorInfo, ...]:
            codes = tuple(dataclasses.replace(t, dtype="int8") if t.role in (f"{prefix}_key", f"{prefix}_value")
                          else t for t in tensors)
            scales = tuple(TensorInfo(f"{t.name}_scale", KV_SCALE_DTYPE, (*t.shape[:3], 1), f"{t.role}_scale",
                                      t.layer) for t in tensors if t.role in (f"{prefix}_key", f"{prefix}_value"))
            return codes + scales

        return dataclasses.replace(self, inputs=int8(self.inputs, "past"), outputs=int8(self.outputs, "present"),
                                   extra={**self.extra, "kv_cache": "int8"})

    @property
    def attention(self) -> str:
        return self.extra.get("attention", "concat")

    @property
    def kv_cache(self) -> str:
        """How the cache stores keys and values: "float" (the graph dtype) or "int8" (codes + scales)."""
        return self.extra.get("kv_cache", "float")

    def cache_names(self, kind: str, io: str = "outputs") -> list[str]:
        """The cache tensors of `kind` ("key" or "value") in `io`, in the order a KVCache holds them: every
        layer's tensor, then (int8 cache) every layer's scales. inputs: past_*, outputs: present_*."""
        prefix = "past" if io == "inputs" else "present"
        return self.names(f"{prefix}_{kind}", io) + self.names(f"{prefix}_{kind}_scale", io)

    @property
    def debug_outputs(self) -> bool:
        """Whether the graph has the per-layer debug outputs (hidden.{i}, router_logits.{i})."""
        return any(t.role in DEBUG_ROLES for t in self.outputs)

    # ---- lookups ---------------------------------------------------------------------------------
    def names(self, role: str, io: str = "outputs") -> list[str]:
        """Names of the tensors with `role`, in layer order (looked up once per contract: a decode step asks
        for the cache's names a dozen times)."""
        memo = self.__dict__.get("_names")
        if memo is None:  # not a field: equality, hashing, replace and asdict never see it
            memo = {}
            object.__setattr__(self, "_names", memo)
        found = memo.get((role, io))
        if found is None:
            found = memo[(role, io)] = tuple(t.name for t in getattr(self, io) if t.role == role)
        return list(found)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    # ---- json ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_hf_dict()
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = CONTRACT_FILE) -> GraphContract:
        if d.get("format") != FORMAT:
            raise MixtralTrtError(f"{source}: not a {FORMAT} file (format={d.get('format')!r})")
        for key in ("max_batch", "max_seq"):  # the runtime sizes caches and checks calls with these
            if not is_int(d.get(key)) or d[key] < 1:
                raise MixtralTrtError(f"{source}: {key}: expected a positive integer, got {d.get(key)!r}")
        extra = d.get("extra") if isinstance(d.get("extra"), dict) else {}
        kv_cache = extra.get("kv_cache", "float")
        if kv_cache not in KV_CACHE_KINDS:  # the runtime would allocate the wrong cache tensors
            raise MixtralTrtError(f"{source}: extra.kv_cache {kv_cache!r}: this mixtral-trt keeps "
                                  f"{' or '.join(KV_CACHE_KINDS)} caches (a newer build's engine?)")
        try:
            return cls(
                config=MixtralConfig.from_hf_dict(d["config"], source=source),
                dtype=d["dtype"],
                max_batch=d["max_batch"],
                max_seq=d["max_seq"],
                inputs=tuple(TensorInfo(**{**t, "shape": tuple(t["shape"])}) for t in d["inputs"]),
                outputs=tuple(TensorInfo(**{**t, "shape": tuple(t["shape"])}) for t in d["outputs"]),
                opset=d.get("opset", 20),
                extra=d.get("extra", {}),
            )
        except (KeyError, TypeError) as e:
            raise MixtralTrtError(f"{source}: malformed graph contract ({e})") from None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONTRACT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> GraphContract:
        path = Path(directory) / CONTRACT_FILE
        if not path.is_file():
            raise MixtralTrtError(f"{path}: missing; is {directory} an export directory (mixtral-export export)?")
        return cls.from_dict(read_json_object(path), source=str(path))
