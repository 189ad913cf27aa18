"""Torch reference of the MoEGemmSwiGLU plugin (rows of padding are left as zeros here; the plugin leaves
them unwritten, so only real rows are compared)."""

import torch
import torch.nn.functional as F


def moe_gemm_swiglu_reference(x, sorted_pairs, block_experts, num_padded, w13, top_k: int, block_size: int):
    """-> inter [M_max, I] in x's dtype."""
    inter_size = w13.shape[1] // 2
    out = torch.zeros(sorted_pairs.numel(), inter_size, dtype=x.dtype)
    p_total = x.shape[0] * top_k
    for r in range(int(num_padded[0])):
        p = int(sorted_pairs[r])
        if p >= p_total:
            continue
        e = int(block_experts[r // block_size])
        gate, up = F.linear(x[p // top_k].float(), w13[e].float()).chunk(2)
        gate, up = gate.to(x.dtype).float(), up.to(x.dtype).float()
        out[r] = (F.silu(gate) * up).to(x.dtype)
    return out
