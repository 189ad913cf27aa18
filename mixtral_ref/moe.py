"""The sparse MoE block and its two custom ops, `mixtral::moe_router` and `mixtral::moe_experts`.

The ops' eager implementations are the reference math; the exporter maps them to the ONNX ops
`mixtral::MoERouter` / `mixtral::MoEExperts` (exporter/ops), so export never traces the data-dependent
expert loop. `router_reference` and `experts_reference` are independent dense formulations that tests
use as the oracle for every implementation (eager op, ONNX function bodies, ORT MoE, plugin kernels).

T tokens, E experts, k experts per token, H hidden, I intermediate (per expert).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixtral_trt.common.config import MixtralConfig


@torch.library.custom_op("mixtral::moe_router", mutates_args=())
def moe_router(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> weights [T, k] float32, experts [T, k] int32 (softmax over the top-k)."""
    top, idx = torch.topk(router_logits.float(), top_k, dim=-1)  # [T, k]
    return torch.softmax(top, dim=-1), idx.to(torch.int32)


@moe_router.register_fake
def _(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = router_logits.shape[0]
    return (router_logits.new_empty((t, top_k), dtype=torch.float32),
            router_logits.new_empty((t, top_k), dtype=torch.int32))


@torch.library.custom_op("mixtral::moe_experts", mutates_args=())
def moe_experts(
    x: torch.Tensor,  # [T, H]
    experts: torch.Tensor,  # [T, k] int32
    weights: torch.Tensor,  # [T, k] float32
    w13: torch.Tensor,  # [E, 2I, H]: rows [0, I) gate (w1), rows [I, 2I) up (w3)
    w2: torch.Tensor,  # [E, H, I]
) -> torch.Tensor:  # [T, H]
    """Sparse SwiGLU experts: only the (token, slot) pairs routed to an expert pass through it."""
    t, h = x.shape
    k = experts.shape[1]
    flat = experts.reshape(-1).long()  # [T*k]
    order = torch.argsort(flat, stable=True)  # (token, slot) pairs grouped by expert
    counts = torch.bincount(flat, minlength=w13.shape[0]).tolist()  # [E]
    out = torch.zeros(t, h, dtype=torch.float32, device=x.device)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        pairs = order[start : start + n]  # [n]
        start += n
        tokens = pairs // k
        gate, up = F.linear(x[tokens], w13[e]).chunk(2, dim=-1)  # [n, I] each
        y = F.linear(F.silu(gate) * up, w2[e])  # [n, H]
        out.index_add_(0, tokens, y.float() * weights.reshape(-1)[pairs, None])
    return out.to(x.dtype)


@moe_experts.register_fake
def _(x, experts, weights, w13, w2):
    return torch.empty_like(x)


def router_reference(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle: softmax over all experts, top-k, renormalise (the HF formulation). Same results as the op."""
    probs = torch.softmax(router_logits.float(), dim=-1)  # [T, E]
    top, idx = torch.topk(probs, top_k, dim=-1)  # [T, k]
    return top / top.sum(-1, keepdim=True), idx.to(torch.int32)


def experts_reference(
    x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor
) -> torch.Tensor:
    """Oracle: every expert on every token (float32), combined with a dense [T, E] routing matrix."""
    xf = x.float()
    inter = w2.shape[-1]
    h13 = torch.einsum("th,eoh->eto", xf, w13.float())  # [E, T, 2I]
    act = F.silu(h13[..., :inter]) * h13[..., inter:]  # [E, T, I]
    ye = torch.einsum("eti,ehi->eth", act, w2.float())  # [E, T, H]
    dense = torch.zeros(x.shape[0], w13.shape[0], dtype=torch.float32, device=x.device)  # [T, E]
    dense.scatter_add_(1, experts.long(), weights.float())
    return torch.einsum("te,eth->th", dense, ye).to(x.dtype)


class MoE(nn.Module):
    """Router (gate) + stacked experts. Parameters: gate.weight [E, H], w13 [E, 2I, H], w2 [E, H, I]."""

    def __init__(self, cfg: MixtralConfig) -> None:
        super().__init__()
        self.top_k = cfg.top_k
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.w13 = nn.Parameter(torch.empty(cfg.num_experts, 2 * cfg.intermediate_size, cfg.hidden_size))
        self.w2 = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size, cfg.intermediate_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H] -> y [B, T, H], router_logits [B*T, E] (in x's dtype, as the checkpoint computes it)."""
        flat = x.reshape(-1, x.shape[-1])  # [B*T, H]
        router_logits = self.gate(flat)  # [B*T, E]
        weights, experts = torch.ops.mixtral.moe_router(router_logits, self.top_k)
        y = torch.ops.mixtral.moe_experts(flat, experts, weights, self.w13, self.w2)
        return y.view_as(x), router_logits
