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
# Engines whose kernels round activations to int8 (ONNX Runtime's 8-bit QMoE and MatMulNBits, manifest
# backend_info "int8_activations_block"), judged against a reference that rounds them the same way: an input
# that differs from the reference's by one float ulp can land on the other side of a rounding boundary, so
# an element may differ by one int8 step (1/254 of its block's range). Measured on `tiny`: logits 3.0e-3,
# hidden 4.4e-4 (layer 1); each kernel alone matches the rounding reference to 5e-7.
INT8_ACTIVATIONS = Tolerance(logits_rel=2e-2, hidden_rel=2e-2, router_rel=2e-2)
