"""Where the router sends tokens: each token's top-k expert set, and tokens per expert per layer.

N tokens, L layers, E experts, k experts per token. Read from an engine's `router_logits.{i}` outputs (an
export with --debug-outputs): `eval` compares the sets with the reference's, `serve` counts them.
"""

from __future__ import annotations

import numpy as np


def expert_sets(router_logits: np.ndarray, top_k: int) -> np.ndarray:
    """[..., E] router logits -> [..., k] uint8: each token's top-k experts, sorted (the set, not the order;
    ties go to the lower expert)."""
    top = np.argsort(-np.asarray(router_logits, np.float32), axis=-1, kind="stable")[..., :top_k]
    return np.sort(top, axis=-1).astype(np.uint8)


def expert_counts(sets: np.ndarray, num_experts: int) -> np.ndarray:
    """[N, L, k] expert sets -> [L, E] int64 tokens routed to each expert of each layer."""
    sets = np.asarray(sets, np.int64)
    layers = sets.shape[1]
    flat = (sets + np.arange(layers)[None, :, None] * num_experts).reshape(-1)
    return np.bincount(flat, minlength=layers * num_experts).reshape(layers, num_experts)


def engine_routing(outputs: dict[str, np.ndarray], names: list[str], top_k: int) -> np.ndarray:
    """An engine call's router outputs (by contract name, each [B*T, E] or [B, T, E]) -> [B*T, L, k] sets."""
    experts = np.shape(outputs[names[0]])[-1]
    return expert_sets(np.stack([np.asarray(outputs[n]).reshape(-1, experts) for n in names], axis=1), top_k)
