"""The logprobs oracle: float64 log-softmax of the reference model's (mixtral_ref) logits."""

from __future__ import annotations

import numpy as np


def reference_logprobs(model, ids: list[int], bias: dict[int, float] | None = None) -> np.ndarray:
    """[T, V] float64 log-softmax of the reference's logits over `ids` (+ a logit bias); row t predicts token t + 1."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0].double()
    for t, b in (bias or {}).items():
        logits[:, t] += b
    return torch.log_softmax(logits, dim=-1).numpy()
