"""Per-token figures of an engine against the reference records, accumulated over an evaluation.

N scored tokens, V vocabulary, L layers, E experts, k experts per token. Everything in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mixtral_trt.runtime.routing import expert_counts

from .reference_file import dequantize, quantize


def log_softmax64(logits: np.ndarray):
    """[N, V] logits -> float64 torch log-probabilities."""
    import torch

    return torch.log_softmax(torch.from_numpy(np.asarray(logits)).double(), -1)


def reference_records(logits: np.ndarray, targets: np.ndarray, routing: np.ndarray | None,
                      dtype: np.dtype) -> np.ndarray:
    """The records of N scored tokens: logits [N, V] float, targets [N], routing [N, L, k] expert sets or None."""
    import torch

    lp = log_softmax64(logits)  # [N, V]
    rec = np.zeros(len(targets), dtype)
    rec["target"] = targets
    rec["target_logprob"] = lp.gather(1, torch.from_numpy(np.asarray(targets, np.int64))[:, None])[:, 0].numpy()
    best = lp.max(-1)
    rec["top1"], rec["top1_prob"] = best.indices.numpy(), best.values.exp().numpy()
    quantize(lp.numpy(), rec)
    if routing is not None and dtype["experts"].shape[0]:
        rec["experts"] = routing
    return rec


@dataclass
class Accumulator:
    """Sums and per-token values of one evaluation; `add` one batch of scored tokens at a time."""

    layers: int
    num_experts: int
    kl: list[np.ndarray] = field(default_factory=list)  # per batch [n] float64
    nll_engine: float = 0.0
    nll_reference: float = 0.0
    tokens: int = 0
    top1_agree: int = 0
    abs_dp: float = 0.0  # sum over tokens of |p_engine(ref top-1) - p_ref(ref top-1)|
    flips: np.ndarray | None = None  # [L] tokens whose top-k set differs
    routed_tokens: int = 0  # tokens with routing on both sides
    load_engine: np.ndarray | None = None  # [L, E] tokens routed to each expert
    load_reference: np.ndarray | None = None

    def add(self, logits: np.ndarray, targets: np.ndarray, records: np.ndarray | None,
            routing: np.ndarray | None) -> None:
        """logits [n, V] of the engine at the scored positions, targets [n], the reference's records [n] (or
        None: no reference), the engine's expert sets [n, L, k] (or None: no routing outputs)."""
        import torch

        lq = log_softmax64(logits)  # [n, V]
        idx = torch.from_numpy(np.asarray(targets, np.int64))[:, None]
        self.nll_engine -= float(lq.gather(1, idx).sum())
        self.tokens += len(targets)
        if routing is not None:
            self.load_engine = _add(self.load_engine, expert_counts(routing, self.num_experts))
        if records is None:
            return
        lp = dequantize(records)  # [n, V]
        self.kl.append((lp.exp() * (lp - lq)).sum(-1).numpy())
        self.nll_reference -= float(records["target_logprob"].astype(np.float64).sum())
        top1 = torch.from_numpy(records["top1"].astype(np.int64))
        self.top1_agree += int((lq.argmax(-1) == top1).sum())
        p_engine = lq.gather(1, top1[:, None])[:, 0].exp().numpy()
        self.abs_dp += float(np.abs(p_engine - records["top1_prob"].astype(np.float64)).sum())
        ref_routing = records["experts"]  # [n, L', k]
        if ref_routing.shape[1]:
            self.load_reference = _add(self.load_reference, expert_counts(ref_routing, self.num_experts))
            if routing is not None:
                differ = (np.asarray(ref_routing) != routing).any(-1).sum(0)  # [L]
                self.flips = differ if self.flips is None else self.flips + differ
                self.routed_tokens += len(targets)

    def summary(self) -> dict:
        kl = np.concatenate(self.kl) if self.kl else np.zeros(0)
        n = max(self.tokens, 1)
        out = {"tokens": self.tokens, "perplexity": math.exp(self.nll_engine / n)}
        if kl.size:
            out |= {
                "reference_perplexity": math.exp(self.nll_reference / n),
                "kl": {"mean": float(kl.mean()), "median": float(np.median(kl)),
                       "p90": float(np.quantile(kl, 0.9)), "p99": float(np.quantile(kl, 0.99)),
                       "max": float(kl.max())},
                "top1_agreement": self.top1_agree / n,
                "mean_abs_delta_p": self.abs_dp / n,
            }
        return out

    @property
    def kl_values(self) -> np.ndarray:
        return np.concatenate(self.kl) if self.kl else np.zeros(0)



def _add(total: np.ndarray | None, counts: np.ndarray) -> np.ndarray:
    return counts if total is None else total + counts
