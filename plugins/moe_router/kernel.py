"""Triton kernel: per token, k rounds of (max, lowest argmax, mask out) over the E logits in float32,
then a softmax over the k values. One program handles BLOCK_T tokens; E fits one BLOCK_E tile (E <= 256).

Argument order (inputs, scalars, outputs) is what TensorRT's AOT launch expects.
"""

import triton
import triton.language as tl


@triton.jit
def moe_router_kernel(
    logits_ptr,  # [T, E]
    T,
    E,
    weights_ptr,  # [T, K] float32
    experts_ptr,  # [T, K] int32
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    cols = tl.arange(0, BLOCK_E)  # [BLOCK_E]
    row_ok = rows < T
    mask = row_ok[:, None] & (cols[None, :] < E)
    vals = tl.load(logits_ptr + rows[:, None] * E + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
    vals = tl.where(row_ok[:, None], vals, 0.0)  # rows past T: finite, never stored
    top0 = tl.max(vals, axis=1)  # [BLOCK_T] the largest logit, the softmax's shift
    denom = tl.zeros([BLOCK_T], dtype=tl.float32)
    for j in tl.static_range(K):
        best = tl.max(vals, axis=1)  # [BLOCK_T]
        is_best = vals == best[:, None]
        idx = tl.min(tl.where(is_best, cols[None, :], BLOCK_E), axis=1)  # lowest expert id among equal maxima
        denom += tl.exp(best - top0)
        tl.store(weights_ptr + rows * K + j, best, mask=row_ok)  # the logit for now; normalised below
        tl.store(experts_ptr + rows * K + j, idx.to(tl.int32), mask=row_ok)
        vals = tl.where(cols[None, :] == idx[:, None], float("-inf"), vals)
    for j in tl.static_range(K):
        logit = tl.load(weights_ptr + rows * K + j, mask=row_ok, other=0.0)
        tl.store(weights_ptr + rows * K + j, tl.exp(logit - top0) / denom, mask=row_ok)
