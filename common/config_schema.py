"""The one schema of config.json (HF) and params.json (mistral-inference), checked before any value is used.

One row per `MixtralConfig` field: its key in each format, its JSON type, its range and whether null is
allowed (a missing or null optional field takes the dataclass default). Each violation is one line naming
the file and the key, e.g. `ckpt/config.json: rope_theta: expected a finite number > 0, got NaN`. Relations
between fields (heads divisible by kv heads, top_k <= experts, ids inside the vocabulary) are checked by
`MixtralConfig.__post_init__` afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

INT_MAX = 2**31 - 1  # TensorRT and ONNX Runtime index tensors with int32
MAX_POSITIONS = 2**24  # 16M tokens: beyond every released model's context


@dataclass(frozen=True)
class Field:
    name: str  # MixtralConfig field
    hf: str | None  # key in config.json (None: not in this format)
    params: str | None  # key in params.json; "moe.x" is x inside the "moe" object
    kind: str  # "int" | "float" | "bool" | "ids" (an int or a non-empty list of ints: eos_token_id)
    low: float = 1  # int: minimum; float: exclusive lower bound
    high: float | None = INT_MAX  # int: maximum; float: exclusive upper bound (None: none)
    required: bool = False
    nullable: bool = False  # null means "use the default"


FIELDS = (
    Field("vocab_size", "vocab_size", "vocab_size", "int", required=True),
    Field("hidden_size", "hidden_size", "dim", "int", required=True),
    Field("intermediate_size", "intermediate_size", "hidden_dim", "int", required=True),
    Field("num_layers", "num_hidden_layers", "n_layers", "int", required=True),
    Field("num_heads", "num_attention_heads", "n_heads", "int", required=True),
    Field("num_kv_heads", "num_key_value_heads", "n_kv_heads", "int", nullable=True),
    Field("head_dim", "head_dim", "head_dim", "int", nullable=True),
    Field("num_experts", "num_local_experts", "moe.num_experts", "int"),
    Field("top_k", "num_experts_per_tok", "moe.num_experts_per_tok", "int"),
    Field("rope_theta", "rope_theta", "rope_theta", "float", low=0, high=None),
    Field("rms_norm_eps", "rms_norm_eps", "norm_eps", "float", low=0, high=1),
    Field("max_position_embeddings", "max_position_embeddings", "max_seq_len", "int", high=MAX_POSITIONS),
    Field("sliding_window", "sliding_window", "sliding_window", "int", nullable=True),
    Field("tie_word_embeddings", "tie_word_embeddings", "tied_embeddings", "bool"),
    Field("bos_token_id", "bos_token_id", None, "int", low=0, nullable=True),
    Field("eos_token_id", "eos_token_id", None, "ids", low=0, nullable=True),
)
BY_NAME = {f.name: f for f in FIELDS}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def expected(field: Field) -> str:
    if field.kind == "bool":
        return "true or false"
    if field.kind == "float":
        return f"a finite number > {field.low:g}" + (f" and < {field.high:g}" if field.high is not None else "")
    if field.low == 1 and field.high == INT_MAX:
        what = "a positive integer"
    elif field.low == 0 and field.high == INT_MAX:
        what = "a token id (an integer >= 0)"
    else:
        what = f"an integer in [{field.low}, {field.high}]"
    if field.kind == "ids":
        what += " or a non-empty list of them"
    return what + (" or null" if field.nullable else "")


def check_value(field: Field, key: str, value: Any, source: str) -> Any:
    """`value` as the dataclass wants it; a one-line ConfigError naming `source` and `key` otherwise."""
    def bad() -> ConfigError:
        shown = "NaN" if isinstance(value, float) and math.isnan(value) else repr(value)
        return ConfigError(f"{source}: {key}: expected {expected(field)}, got {shown}")

    if field.kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if field.kind == "float":
        if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                and value > field.low and (field.high is None or value < field.high)):
            raise bad()
        return float(value)
    values = value if field.kind == "ids" and isinstance(value, list) else [value]
    if not values or not all(_is_int(v) and field.low <= v <= field.high for v in values):
        raise bad()
    return values[0]  # eos_token_id: HF allows several end ids; the first ends generation here


def _get(d: dict, key: str) -> tuple[bool, Any]:
    *parents, last = key.split(".")
    for p in parents:
        d = d.get(p) if isinstance(d, dict) else None
    return (isinstance(d, dict) and last in d), (d.get(last) if isinstance(d, dict) else None)


def _fields(d: dict[str, Any], fmt: str, source: str) -> dict[str, Any]:
    kwargs = {}
    for field in FIELDS:
        key = getattr(field, fmt)
        if key is None:
            continue
        present, value = _get(d, key)
        if not present or (value is None and field.nullable):
            if field.required:
                raise ConfigError(f"{source}: missing field {key!r}")
            continue
        kwargs[field.name] = check_value(field, key, value, source)
    kwargs.setdefault("num_kv_heads", kwargs["num_heads"])
    kwargs.setdefault("head_dim", kwargs["hidden_size"] // kwargs["num_heads"])
    return kwargs


def _string(d: dict, key: str, default: str, source: str) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
    return value


def _object(d: dict, key: str, source: str, nullable: bool = True) -> dict:
    value = d.get(key)
    if value is None and nullable:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected an object{' or null' if nullable else ''}, got {value!r}")
    return value


def hf_config_fields(d: dict[str, Any], source: str) -> dict[str, Any]:
    """MixtralConfig keyword arguments from a config.json object, every value checked."""
    model_type = _string(d, "model_type", "mixtral", source)
    if model_type != "mixtral":
        raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'mixtral'")
    act = _string(d, "hidden_act", "silu", source)
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported (Mixtral uses silu)")
    # transformers 5 writes rope_parameters (with rope_theta inside); earlier versions rope_scaling
    key = "rope_parameters" if d.get("rope_parameters") is not None else "rope_scaling"
    rope = _object(d, key, source)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(f"{source}: {key}: RoPE scaling {rope_type!r} is not supported")
    kwargs = _fields(d, "hf", source)
    if "rope_theta" in rope:
        kwargs["rope_theta"] = check_value(BY_NAME["rope_theta"], f"{key}.rope_theta", rope["rope_theta"], source)
    return kwargs


def params_fields(d: dict[str, Any], source: str) -> dict[str, Any]:
    """MixtralConfig keyword arguments from a params.json object, every value checked."""
    if not d.get("moe"):
        raise ConfigError(f"{source}: no 'moe' section: this is not a Mixtral (sparse MoE) model")
    moe = _object(d, "moe", source, nullable=False)
    for key in ("num_experts", "num_experts_per_tok"):
        if key not in moe:
            raise ConfigError(f"{source}: missing field 'moe.{key}'")
    # mistral-inference uses 1e6 when rope_theta is absent or null
    return _fields({**d, "rope_theta": 1e6 if d.get("rope_theta") is None else d["rope_theta"]}, "params", source)
