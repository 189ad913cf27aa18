"""Host side of MoEAlign: the static output sizes and the single-program launch."""

from __future__ import annotations

import torch

BLOCK_P = 128


def sizes(tokens: int, top_k: int, num_experts: int, block_size: int) -> tuple[int, int]:
    """(M_max, number of blocks): upper bounds known from T alone, so buffers are sized at build time."""
    m_max = tokens * top_k + num_experts * (block_size - 1)
    return m_max, -(-m_max // block_size)


def block_e(num_experts: int) -> int:
    return max(16, 1 << (num_experts - 1).bit_length())


def run(experts: torch.Tensor, num_experts: int, block_size: int,
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    from .kernel import moe_align_kernel

    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"MoEAlign: block_size={block_size} must be a power of 2")
    t, k = experts.shape
    m_max, num_blocks = sizes(t, k, num_experts, block_size)
    dev = experts.device
    sorted_pairs, block_experts, num_padded = out or (torch.empty(m_max, dtype=torch.int32, device=dev),
                                                      torch.empty(num_blocks, dtype=torch.int32, device=dev),
                                                      torch.empty(1, dtype=torch.int32, device=dev))
    moe_align_kernel[(1,)](experts.contiguous().to(torch.int32), t * k, num_experts, m_max, num_blocks, sorted_pairs,
                           block_experts, num_padded, BLOCK=block_size, BLOCK_P=BLOCK_P, BLOCK_E=block_e(num_experts))
    return sorted_pairs, block_experts, num_padded
