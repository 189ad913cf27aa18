"""Float experts laid out for ONNX Runtime's CPU MoE kernel's threads: each expert split into `parts`
virtual experts along the intermediate dimension.

The CPU `com.microsoft::MoE` kernel hands the experts to its threads in fixed contiguous ranges (thread t
of T gets experts [tE/T, (t+1)E/T)), whatever the routing. At decode a token uses k = 2 of E = 8 experts,
and both fall in one thread's range 3 times in 7: that thread reads both experts while the other waits.
SwiGLU experts are separable along I, so expert e becomes `parts` virtual experts v = p*E + e, each with
rows [pI/P, (p+1)I/P) of W1 and W3 and the matching columns of W2; the router logits are repeated `parts`
times and k becomes k*parts, so a token routed to e is routed to all of e's parts, and thread t's range
is part t of every expert: the same bytes for every thread, whatever the routing.

Routing weights: the kernel normalises the softmax over the k*parts chosen logits, so each part gets
w_e / parts; W2's columns are multiplied by `parts` (exact in floating point for a power of two), so
the parts sum to w_e W2[e] act(e). E experts, I intermediate, H hidden, P parts.
"""

from __future__ import annotations

import numpy as np


def split_w13(w13: np.ndarray, parts: int) -> np.ndarray:
    """[E, 2I, H] gate rows then up rows -> [P*E, 2I/P, H], part p of expert e at P-major index p*E + e."""
    e, two_i, h = w13.shape
    i, p = two_i // 2, two_i // 2 // parts
    gate, up = w13[:, :i], w13[:, i:]
    return np.concatenate([np.concatenate([gate[:, j * p:(j + 1) * p], up[:, j * p:(j + 1) * p]], axis=1)
                           for j in range(parts)], axis=0)


def split_w2(w2: np.ndarray, parts: int) -> np.ndarray:
    """[E, H, I] -> [P*E, H, I/P], columns of part p, scaled by P."""
    p = w2.shape[2] // parts
    return np.ascontiguousarray(np.concatenate([w2[:, :, j * p:(j + 1) * p] * np.asarray(parts, w2.dtype)
                                                for j in range(parts)], axis=0))


def parts_for(intermediate: int, parts: int) -> int:
    """`parts` if it divides I (else 1: no split)."""
    return parts if parts > 1 and intermediate % parts == 0 else 1

