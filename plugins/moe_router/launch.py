"""Host side of MoERouter: output sizes, tile sizes and grid; `run` launches on torch tensors (CUDA, or CPU
under the Triton interpreter)."""

from __future__ import annotations

import torch

from ..interpreter import fp32_under_interpreter

BLOCK_T = 16
MAX_EXPERTS = 256


def block_e(num_experts: int) -> int:
    if num_experts > MAX_EXPERTS:
        raise ValueError(f"MoERouter supports up to {MAX_EXPERTS} experts, got {num_experts}")
    return max(16, 1 << (num_experts - 1).bit_length())


def grid(tokens: int) -> tuple[int]:
    return (max(1, -(-tokens // BLOCK_T)),)


def run(router_logits: torch.Tensor, top_k: int, out: tuple[torch.Tensor, torch.Tensor] | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (weights [T, k] float32, experts [T, k] int32), into `out` when given."""
    from .kernel import moe_router_kernel

    t, e = router_logits.shape
    if not 1 <= top_k <= e:
        raise ValueError(f"MoERouter: top_k={top_k} must be in [1, {e}]")

    (logits,), _ = fp32_under_interpreter(router_logits.contiguous())  # exact: the kernel works in fp32
    weights, experts = out or (torch.empty(t, top_k, dtype=torch.float32, device=logits.device),
                               torch.empty(t, top_k, dtype=torch.int32, device=logits.device))
    if t:
        moe_router_kernel[grid(t)](logits, t, e, weights, experts, K=top_k, BLOCK_T=BLOCK_T, BLOCK_E=block_e(e))
    return weights, experts
