"""Torch reference of the MoEAlign plugin."""

import torch


def moe_align_reference(experts: torch.Tensor, num_experts: int, block_size: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """experts [T, k] -> sorted_pairs [M_max], block_experts [ceil(M_max / block)], num_padded [1]."""
    flat = experts.reshape(-1).long()  # [P]
    p = flat.numel()
    m_max = p + num_experts * (block_size - 1)
    sorted_pairs = torch.full((m_max,), p, dtype=torch.int32)
    block_experts = torch.full((-(-m_max // block_size),), -1, dtype=torch.int32)
    row = 0
    for e in range(num_experts):
        pairs = torch.nonzero(flat == e).reshape(-1)  # ascending pair ids: a stable sort
        sorted_pairs[row : row + pairs.numel()] = pairs.to(torch.int32)
        padded = -(-pairs.numel() // block_size) * block_size
        block_experts[row // block_size : (row + padded) // block_size] = e
        row += padded
    return sorted_pairs, block_experts, torch.tensor([row], dtype=torch.int32)
