"""Parity tolerances per engine dtype (against the float32 reference).

All relative errors are max |engine - reference| / max |reference| over the compared tensor. A flip
(top-1 token, router top-k set, greedy token) is "near-tie" when the reference's own margin at that point
is within the tolerance: a numerically allowed flip, counted and reported but not a failure. Any other
flip fails. Figures behind the choices (tiny 6-expert top-3 sliding-window model, see README):
fp32 logits ~2e-7, fp16 ~1.2e-3, bf16 ~1.1e-2 relative.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    logits_rel: float  # logits: max abs error / max |ref|
    hidden_rel: float  # residual stream after each layer, same measure
    router_rel: float  # router logits of each layer, same measure; also the near-tie margin for flips


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(logits_rel=1e-4, hidden_rel=1e-4, router_rel=1e-4),
    "fp16": Tolerance(logits_rel=2e-2, hidden_rel=2e-2, router_rel=2e-2),
    "bf16": Tolerance(logits_rel=6e-2, hidden_rel=6e-2, router_rel=6e-2),
}
