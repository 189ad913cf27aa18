"""Weights and KV cache per GPU of a tensor-parallel engine: the arithmetic behind docs/TENSOR_PARALLEL.md's plan.

Counts what rank 0 stores (every rank stores the same amount, up to vocabulary padding): its query and kv
heads' attention matrices (kv matrices replicated when there are more ranks than kv heads), its rows of
every expert (int8 / int4 with one bf16 scale per output row, or per `block` inputs), its vocabulary rows of
the embedding and the output head, and the replicated norms and router. Activations and the TensorRT
workspace come on top (a few GB at long prefills).
"""

from __future__ import annotations

from dataclasses import dataclass

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.tensor_parallel import TensorParallel

EXPERT_BITS = {"bf16": 16, "int8": 8, "int4": 4}
ACT_BYTES = 2  # bf16 attention, embeddings, norms, scales and KV cache


@dataclass(frozen=True)
class GpuMemory:
    weights: int  # bytes of weights per GPU
    kv_per_token: int  # bytes of KV cache per token (all layers) per GPU

    def kv_tokens(self, gpu_bytes: float, reserve: float = 4e9) -> int:
        """Tokens of KV cache that fit beside the weights, keeping `reserve` bytes for activations."""
        return max(0, int((gpu_bytes - reserve - self.weights) // self.kv_per_token))


def per_gpu(cfg: MixtralConfig, world_size: int, experts: str = "bf16", block: int = 0) -> GpuMemory:
    tp = TensorParallel(world_size)
    h, d, e, layers = cfg.hidden_size, cfg.head_dim, cfg.num_experts, cfg.num_layers
    q_heads, kv_heads = len(tp.q_heads(cfg, 0)), tp.local_kv_heads(cfg)
    inter = cfg.intermediate_size // world_size
    attention = (2 * h * q_heads * d + 2 * h * kv_heads * d) * ACT_BYTES
    expert = e * 3 * h * inter * EXPERT_BITS[experts] // 8
    if experts != "bf16":  # scales: w13 [E, 2I/N(, H/block)], w2 [E, H(, I/N/block)]
        expert += e * (2 * inter * (h // block if block else 1) + h * (inter // block if block else 1)) * ACT_BYTES
    replicated = (2 * h + h * e) * ACT_BYTES
    vocab = tp.vocab_rows(cfg) * h * ACT_BYTES * (1 if cfg.tie_word_embeddings else 2)
    weights = layers * (attention + expert + replicated) + vocab + h * ACT_BYTES
    return GpuMemory(weights, 2 * layers * kv_heads * d * ACT_BYTES)
