"""Tiny random models and engines for tests (importable as `support.models`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.dtypes import torch_dtype
from mixtral_trt.exporter.export import export_model
from mixtral_trt.mixtral_ref.model import Mixtral

# Sizes not in the presets: odd head/hidden sizes, 6 experts, top-3, a short sliding window.
SLIDING_TOP3 = MixtralConfig(vocab_size=211, hidden_size=40, intermediate_size=52, num_layers=2, num_heads=4,
                             num_kv_heads=2, head_dim=10, num_experts=6, top_k=3, sliding_window=5,
                             max_position_embeddings=256)
# The same with head_dim 16: GroupQueryAttention's rotary embedding needs a multiple of 16 (backend ort-gqa).
GQA_TOP3 = SLIDING_TOP3.replace(head_dim=16, max_position_embeddings=640)


def random_model(cfg: MixtralConfig, seed: int = 0, dtype: str = "fp32") -> Mixtral:
    """Weights of a realistic scale (std 0.08, norms near 1) so that routing is not degenerate."""
    gen = torch.Generator().manual_seed(seed)
    model = Mixtral(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=gen))
    return model.to(torch_dtype(dtype))


def export_dir(tmp_path_factory, model: Mixtral, dtype: str, name: str, max_seq: int = 256,
               debug_outputs: bool = True) -> Path:
    """An export of `model` with the per-layer debug outputs (tests compare them layer by layer)."""
    out = tmp_path_factory.mktemp(name)
    export_model(model, out, GraphContract.for_config(model.config, dtype, max_batch=4, max_seq=max_seq,
                                                      debug_outputs=debug_outputs))
    return out


def feeds_for(contract: GraphContract, ids: np.ndarray, past: int = 0) -> dict[str, np.ndarray]:
    from mixtral_trt.runtime.kv_cache import KVCache

    b, t = ids.shape
    assert past == 0
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((b, t), np.int64),
            "position_ids": np.tile(np.arange(t, dtype=np.int64), (b, 1)),
            **KVCache.empty(contract, b).feeds(contract)}
