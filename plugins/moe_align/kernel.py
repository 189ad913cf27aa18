"""Triton kernel: one program (one CTA) aligns all pairs; fine for T up to thousands (E is small).

1. histogram of the expert ids (chunks of BLOCK_P pairs against a BLOCK_E one-hot);
2. each expert's run padded to BLOCK, exclusive prefix sum -> run starts, total;
3. fill every row with the sentinel and every block with -1 (a barrier orders these stores before 4.);
4. scatter: pair p goes to start[e] + its rank among earlier pairs of expert e (within-chunk cumsum of the
   one-hot plus the running count before the chunk) -> a stable sort by expert;
5. block b belongs to the expert whose padded run contains row b*BLOCK.
Argument order (inputs, scalars, outputs) is what TensorRT's AOT launch expects.
"""

import triton
import triton.language as tl


@triton.jit
def moe_align_kernel(
    experts_ptr,  # [P] int32, P = T*k pairs
    P,
    E,
    M_MAX,
    NUM_BLOCKS,
    sorted_ptr,  # [M_MAX] int32
    block_experts_ptr,  # [NUM_BLOCKS] int32
    num_padded_ptr,  # [1] int32
    BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    e_ids = tl.arange(0, BLOCK_E)  # [BLOCK_E]
    lanes = tl.arange(0, BLOCK_P)  # [BLOCK_P]
    counts = tl.zeros([BLOCK_E], dtype=tl.int32)
    for start in range(0, P, BLOCK_P):
        p = start + lanes
        ex = tl.load(experts_ptr + p, mask=p < P, other=-1)
        ex = tl.where((ex >= 0) & (ex < E), ex, -1)  # ids outside [0, E) (TensorRT's timing data) match no expert
        counts += tl.sum((ex[:, None] == e_ids[None, :]).to(tl.int32), axis=0)
    padded = (counts + BLOCK - 1) // BLOCK * BLOCK  # [BLOCK_E]
    ends = tl.cumsum(padded, axis=0)  # inclusive
    starts = ends - padded
    total = tl.sum(padded, axis=0)
    tl.store(num_padded_ptr, total)

    for start in range(0, M_MAX, BLOCK_P):
        rows = start + lanes
        tl.store(sorted_ptr + rows, P, mask=rows < M_MAX)
    tl.debug_barrier()

    seen = tl.zeros([BLOCK_E], dtype=tl.int32)  # pairs of each expert already placed
    for start in range(0, P, BLOCK_P):
        p = start + lanes
        ok = p < P
        ex = tl.load(experts_ptr + p, mask=ok, other=-1)
        ex = tl.where((ex >= 0) & (ex < E), ex, -1)
        ok = ok & (ex >= 0)
        onehot = (ex[:, None] == e_ids[None, :]).to(tl.int32)  # [BLOCK_P, BLOCK_E]
        rank = tl.cumsum(onehot, axis=0) - onehot + seen[None, :]  # exclusive, per expert
        dest = tl.sum(onehot * (starts[None, :] + rank), axis=1)  # [BLOCK_P]
        tl.store(sorted_ptr + dest, p, mask=ok)
        seen += tl.sum(onehot, axis=0)

    for start in range(0, NUM_BLOCKS, BLOCK_P):
        b = start + lanes
        row = b * BLOCK
        owner = tl.sum((ends[None, :] <= row[:, None]).to(tl.int32), axis=1)  # experts whose run ends before
        owner = tl.where(row < total, owner, -1)
        tl.store(block_experts_ptr + b, owner, mask=b < NUM_BLOCKS)
