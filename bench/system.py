"""Machine figures for the roofline: streaming read bandwidth and peak RSS.

Decode at batch 1 reads every active weight once per token, so its ceiling is read bandwidth divided by
the active weight bytes per token. Bandwidth is the best of several timed multi-threaded reductions
over a 1 GiB buffer (far larger than any cache), the same access pattern as a weight-streaming GEMV.
"""

from __future__ import annotations

import resource
import time

from mixtral_trt.common.config import MixtralConfig


def read_bandwidth_gbs(gib: float = 1.0, repeats: int = 5, threads: int | None = None) -> float:
    import torch

    if threads:
        torch.set_num_threads(threads)
    buf = torch.ones(int(gib * (1 << 30)) // 4)
    buf.sum()  # fault the pages in
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        buf.sum()
        best = max(best, buf.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best


def active_weight_bytes(cfg: MixtralConfig, bytes_per_weight: float, expert_bytes: float | None = None) -> float:
    """Weights read per decoded token: everything but the embedding table (one row is gathered; unless it
    is tied to the LM head, which reads it whole), with only the top_k experts of each layer. Quantized
    experts: `expert_bytes` per expert weight (bits / 8, scales neglected)."""
    gathered = 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size
    experts = cfg.num_layers * cfg.top_k * 3 * cfg.hidden_size * cfg.intermediate_size
    dense = cfg.num_parameters(active=True) - gathered - experts
    return dense * bytes_per_weight + experts * (bytes_per_weight if expert_bytes is None else expert_bytes)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
