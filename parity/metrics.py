"""Parity metrics: tensor errors (polygraphy's comparator for pass/fail, numpy for the figures), top-1
agreement, router top-k agreement with near-tie classification, greedy-sequence match.

Shapes: logits [N, V] over the compared (real-token) positions, router logits [N, E], hidden [N, H].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorError:
    max_abs: float
    mean_abs: float
    max_rel: float  # max_abs / max |ref|
    passed: bool  # polygraphy's comparator verdict with atol = tolerance * max |ref|


def tensor_error(got: np.ndarray, ref: np.ndarray, rel_tol: float, name: str = "tensor") -> TensorError:
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    scale = float(np.abs(ref).max()) or 1.0
    compare = SimpleCompareFunc(atol={name: rel_tol * scale}, rtol={name: 0.0}, check_error_stat={name: "max"})
    verdict = compare(IterationResult({name: ref}, runner_name="mixtral_ref"),
                      IterationResult({name: got}, runner_name="engine"))[name]
    diff = np.abs(got - ref)
    return TensorError(float(diff.max()), float(diff.mean()), float(diff.max()) / scale, bool(verdict))


@dataclass(frozen=True)
class Flips:
    positions: int
    near_tie: int  # differ, but the reference's margin is within the tolerance
    unexplained: int  # differ with a clear reference margin: a failure

    @property
    def agreement(self) -> float:
        return 1.0 - (self.near_tie + self.unexplained) / max(self.positions, 1)


def _margin(ref: np.ndarray, k: int) -> np.ndarray:
    """Per row: k-th largest minus (k+1)-th largest reference value."""
    top = -np.sort(-ref, axis=-1)[:, : k + 1]
    return top[:, k - 1] - top[:, k]


def topk_flips(got: np.ndarray, ref: np.ndarray, k: int, tie_margin: float) -> Flips:
    """Rows whose top-k SET differs; near-tie when the reference's k-th vs (k+1)-th margin <= tie_margin."""
    if k >= ref.shape[-1]:  # every expert chosen: no flip possible
        return Flips(ref.shape[0], 0, 0)
    got_sets = np.sort(np.argsort(-got, axis=-1, kind="stable")[:, :k], axis=-1)
    ref_sets = np.sort(np.argsort(-ref, axis=-1, kind="stable")[:, :k], axis=-1)
    differ = (got_sets != ref_sets).any(axis=-1)
    tie = _margin(ref, k) <= tie_margin
    return Flips(int(ref.shape[0]), int((differ & tie).sum()), int((differ & ~tie).sum()))


@dataclass(frozen=True)
class GreedyMatch:
    steps: int
    matched: int  # tokens equal before the first divergence
    divergence_margin: float | None  # reference top-2 logit margin at the first divergence
    explained: bool  # no divergence, or one at a near-tie

    @property
    def exact(self) -> bool:
        return self.matched == self.steps


def greedy_match(got: list[int], ref: list[int], ref_logits: list[np.ndarray], tie_margin: float) -> GreedyMatch:
    """Compare greedy continuations; ref_logits[i] are the reference logits [V] that chose ref[i]."""
    steps = len(ref)
    matched = next((i for i, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b), min(len(got), steps))
    if matched == steps and len(got) == steps:
        return GreedyMatch(steps, steps, None, True)
    if matched >= len(ref_logits):
        return GreedyMatch(steps, matched, None, False)
    margin = float(_margin(ref_logits[matched][None], 1)[0])
    return GreedyMatch(steps, matched, margin, margin <= tie_margin)
