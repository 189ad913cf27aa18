"""Mixtral model configuration: one frozen dataclass, read from HF `config.json` or mistral `params.json`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_schema import FIELDS, check_value, hf_config_fields, params_fields
from .errors import ConfigError
from .fileio import read_json_object
from .paths import confined

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
        """The schema's ranges (config_schema.FIELDS) for configs built in code, then the relations."""
        for f in FIELDS:  # in the dataclass every field but sliding_window is set, and eos is one id
            f = dataclasses.replace(f, kind="int" if f.kind == "ids" else f.kind, nullable=f.name == "sliding_window")
            if getattr(self, f.name) is not None or not f.nullable:
                check_value(f, f.name, getattr(self, f.name), "config")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"config: num_heads={self.num_heads} is not a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"config: head_dim={self.head_dim} must be even for RoPE")
        if self.top_k > self.num_experts:
            raise ConfigError(f"config: top_k={self.top_k} exceeds num_experts={self.num_experts}")
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
        """From a config.json object; every field is checked by config_schema first."""
        return cls._checked(hf_config_fields(d, source), source)

    @classmethod
    def _checked(cls, kwargs: dict[str, Any], source: str) -> MixtralConfig:
        try:
            return cls(**kwargs)
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
        """From a params.json object; every field is checked by config_schema first."""
        return cls._checked(params_fields(d, source), source)

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
                return parse(read_json_object(confined(path, f, ConfigError), ConfigError), source=str(f))
        raise ConfigError(f"{path}: no {HF_CONFIG} or {MISTRAL_PARAMS} found")
