"""Torch reference of the MoERouter plugin (the canonical op's math; ties go to the lower expert id)."""

import torch


def moe_router_reference(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> weights [T, k] float32, experts [T, k] int32."""
    logits = router_logits.float()
    # stable descending sort: among equal logits the lower expert id comes first
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices[:, :top_k]  # [T, k]
    top = torch.gather(logits, 1, order)
    return torch.softmax(top, dim=-1), order.to(torch.int32)
