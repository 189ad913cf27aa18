"""Torch reference of the MoEGemmDown plugin."""

import torch
import torch.nn.functional as F


def moe_gemm_down_reference(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k: int,
                            block_size: int):
    """-> y_pairs [T*k, H] float32."""
    p_total = weights.numel()
    out = torch.zeros(p_total, w2.shape[1], dtype=torch.float32)
    flat_w = weights.reshape(-1).float()
    for r in range(int(num_padded[0])):
        p = int(sorted_pairs[r])
        if p >= p_total:
            continue
        e = int(block_experts[r // block_size])
        y = F.linear(inter[r].float(), w2[e].float()).to(inter.dtype).float()
        out[p] = y * flat_w[p]
    return out
