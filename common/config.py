"""Mixtral model configuration: one frozen dataclass, read from HF `config.json` or mistral `params.json`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fileio import read_json_object

HF_CONFIG = "config.json"
MISTRAL_PARAMS = "params.json"


@dataclass(frozen=True)
class MixtralConfig:
    vocab_size: int
    hidden_size: int  # H
    intermediate_size: int  # I (per expert)
    num_layers: int  # L
    num_heads: int
    num_kv_heads: int
    head_dim: int  # D
    num_experts: int  # E
    top_k: int  # k experts per token
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 32768
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "num_experts", "top_k", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config: {name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"config: num_heads={self.num_heads} is not a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"config: head_dim={self.head_dim} must be even for RoPE")
        if self.top_k > self.num_experts:
            raise ConfigError(f"config: top_k={self.top_k} exceeds num_experts={self.num_experts}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(f"config: sliding_window must be positive or null, got {self.sliding_window}")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ConfigError("config: rope_theta and rms_norm_eps must be positive")
        for name in ("bos_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(f"config: {name}={getattr(self, name)} is outside the vocabulary")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def num_parameters(self, active: bool = False) -> int:
        """Parameter count; `active=True` counts only the top_k experts a token passes through."""
        h, i = self.hidden_size, self.intermediate_size
        experts = self.top_k if active else self.num_experts
        attention = h * self.q_size * 2 + h * self.kv_size * 2
        per_layer = attention + 2 * h + h * self.num_experts + experts * 3 * h * i
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.num_layers * per_layer + self.vocab_size * h + h + head

    def replace(self, **changes: Any) -> MixtralConfig:
        return dataclasses.replace(self, **changes)

    # ---- HF config.json ------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = HF_CONFIG) -> MixtralConfig:
        model_type = d.get("model_type", "mixtral")
        if model_type != "mixtral":
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'mixtral'")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act {d['hidden_act']!r} is not supported (Mixtral uses silu)")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError(f"{source}: RoPE scaling {rope!r} is not supported")
        theta = rope.get("rope_theta", d.get("rope_theta", 1e6))
        eos = d.get("eos_token_id", 2)
        try:
            heads = d["num_attention_heads"]
            return cls(
                vocab_size=d["vocab_size"],
                hidden_size=d["hidden_size"],
                intermediate_size=d["intermediate_size"],
                num_layers=d["num_hidden_layers"],
                num_heads=heads,
                num_kv_heads=d.get("num_key_value_heads") or heads,
                head_dim=d.get("head_dim") or d["hidden_size"] // heads,
                num_experts=d.get("num_local_experts", 8),
                top_k=d.get("num_experts_per_tok", 2),
                rope_theta=float(theta),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
                max_position_embeddings=d.get("max_position_embeddings", 32768),
                sliding_window=d.get("sliding_window"),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                bos_token_id=d.get("bos_token_id") if d.get("bos_token_id") is not None else 1,
                eos_token_id=(eos[0] if isinstance(eos, list) else eos) if eos is not None else 2,
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field {e.args[0]!r}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {str(e).removeprefix('config: ')}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "num_local_experts": self.num_experts,
            "num_experts_per_tok": self.top_k,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }

    # ---- mistral-inference params.json ---------------------------------------------------------
    @classmethod
    def from_params_dict(cls, d: dict[str, Any], source: str = MISTRAL_PARAMS) -> MixtralConfig:
        moe = d.get("moe")
        if not moe:
            raise ConfigError(f"{source}: no 'moe' section: this is not a Mixtral (sparse MoE) model")
        try:
            heads = d["n_heads"]
            return cls(
                vocab_size=d["vocab_size"],
                hidden_size=d["dim"],
                intermediate_size=d["hidden_dim"],
                num_layers=d["n_layers"],
                num_heads=heads,
                num_kv_heads=d.get("n_kv_heads") or heads,
                head_dim=d.get("head_dim") or d["dim"] // heads,
                num_experts=moe["num_experts"],
                top_k=moe["num_experts_per_tok"],
                # mistral-inference falls back to 1e6 when params.json has no rope_theta
                rope_theta=float(d.get("rope_theta") or 1e6),
                rms_norm_eps=float(d.get("norm_eps", 1e-5)),
                max_position_embeddings=d.get("max_seq_len", 32768),
                sliding_window=d.get("sliding_window"),
                tie_word_embeddings=bool(d.get("tied_embeddings", False)),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field {e.args[0]!r}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {str(e).removeprefix('config: ')}") from None

    def to_params_dict(self) -> dict[str, Any]:
        return {
            "dim": self.hidden_size,
            "n_layers": self.num_layers,
            "head_dim": self.head_dim,
            "hidden_dim": self.intermediate_size,
            "n_heads": self.num_heads,
            "n_kv_heads": self.num_kv_heads,
            "norm_eps": self.rms_norm_eps,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
            "max_seq_len": self.max_position_embeddings,
            "sliding_window": self.sliding_window,
            "moe": {"num_experts": self.num_experts, "num_experts_per_tok": self.top_k},
            **({"tied_embeddings": True} if self.tie_word_embeddings else {}),
        }

    # ---- files ---------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path) -> MixtralConfig:
        """Read `config.json` (HF) or, failing that, `params.json` (mistral-inference) from a directory."""
        path = Path(path)
        for name, parse in ((HF_CONFIG, cls.from_hf_dict), (MISTRAL_PARAMS, cls.from_params_dict)):
            f = path / name
            if f.is_file():
                return parse(read_json_object(f, ConfigError), source=str(f))
        raise ConfigError(f"{path}: no {HF_CONFIG} or {MISTRAL_PARAMS} found")
