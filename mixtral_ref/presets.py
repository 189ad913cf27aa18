"""Named configurations: `tiny` for tests and the demo, `small` for benchmarks, and the real Mixtral sizes."""

from __future__ import annotations

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import ConfigError

PRESETS: dict[str, MixtralConfig] = {
    # 8 experts, top-2 and GQA like the real model; vocab 32000 so the real v1 tokenizer fits.
    "tiny": MixtralConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, num_experts=8, top_k=2, max_position_embeddings=4096,
    ),
    # About 200M parameters (about 61M active per token): the benchmark model.
    "small": MixtralConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=1280, num_layers=6, num_heads=12,
        num_kv_heads=4, head_dim=64, num_experts=8, top_k=2, max_position_embeddings=8192,
    ),
    # mistralai/Mixtral-8x7B-v0.1: 46.7B parameters, 12.9B active.
    "mixtral-8x7b": MixtralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, num_experts=8, top_k=2, max_position_embeddings=32768,
    ),
    # mistralai/Mixtral-8x22B-v0.1: 140.6B parameters, 39.2B active.
    "mixtral-8x22b": MixtralConfig(
        vocab_size=32768, hidden_size=6144, intermediate_size=16384, num_layers=56, num_heads=48,
        num_kv_heads=8, head_dim=128, num_experts=8, top_k=2, max_position_embeddings=65536,
    ),
}


def get_preset(name: str) -> MixtralConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
