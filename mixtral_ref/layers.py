"""RMSNorm, rotary embeddings and grouped-query attention with an explicit KV cache.

B batch, T new tokens, P past tokens, S = P + T key slots, H hidden, D head_dim,
N query heads, G kv heads (N = G * R, R queries per kv head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixtral_trt.common.config import MixtralConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-valued RoPE tables for the rotate-half layout. position_ids [B, T] -> cos, sin [B, T, D]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                             device=position_ids.device) / head_dim))  # [D/2]
    freqs = position_ids.float()[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [B, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D]; cos, sin [B, T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def attention_bias(
    attention_mask: torch.Tensor, past_len: int | torch.Tensor, new_len: int, sliding_window: int | None
) -> torch.Tensor:
    """Additive float32 bias [B, 1, T, S] from a key-padding mask attention_mask [B, S] (1 = real token).

    Query t sits in key slot P + t; it sees slot s when s <= P + t, when the slot holds a real token, and,
    with a sliding window W, when P + t - s < W. A row with nothing visible (a padding query) gets a
    uniform distribution instead of NaN, since the bias is finite.
    """
    s = attention_mask.shape[-1]
    key_slot = torch.arange(s, device=attention_mask.device)  # [S]
    query_slot = torch.arange(new_len, device=attention_mask.device) + past_len  # [T]
    visible = key_slot[None, :] <= query_slot[:, None]  # [T, S]
    if sliding_window is not None:
        visible = visible & (key_slot[None, :] > query_slot[:, None] - sliding_window)
    visible = visible[None] & attention_mask[:, None, :].bool()  # [B, T, S]
    bias = torch.zeros(visible.shape, dtype=torch.float32, device=attention_mask.device)
    return bias.masked_fill(~visible, torch.finfo(torch.float32).min)[:, None]  # [B, 1, T, S]


class Attention(nn.Module):
    def __init__(self, cfg: MixtralConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.hidden_size, cfg.q_size, bias=False)
        self.wk = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=False)
        self.wv = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=False)
        self.wo = nn.Linear(cfg.q_size, cfg.hidden_size, bias=False)
        self.kv_rounding = None  # what a new key / value goes through entering the cache (kv_quant.int8_kv_)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, H]
        cos: torch.Tensor,  # [B, T, D]
        sin: torch.Tensor,  # [B, T, D]
        bias: torch.Tensor,  # [B, 1, T, S] float32
        past_k: torch.Tensor,  # [B, G, P, D]
        past_v: torch.Tensor,  # [B, G, P, D]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        g, d = self.n_kv, self.head_dim
        r = self.n_heads // g
        q = self.wq(x).view(b, t, self.n_heads, d).transpose(1, 2)  # [B, N, T, D]
        k = self.wk(x).view(b, t, g, d).transpose(1, 2)  # [B, G, T, D]
        v = self.wv(x).view(b, t, g, d).transpose(1, 2)  # [B, G, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_rounding is not None:  # an int8 KV cache: attention reads what the cache gives back
            k, v = self.kv_rounding(k), self.kv_rounding(v)
        k = torch.cat((past_k, k), dim=2)  # [B, G, S, D]
        v = torch.cat((past_v, v), dim=2)  # [B, G, S, D]
        # Each kv head serves its R query heads as R*T rows: no repeated K/V is materialised.
        qg = q.reshape(b, g, r * t, d)  # [B, G, R*T, D]
        scores = torch.matmul(qg, k.transpose(2, 3)) * (d**-0.5)  # [B, G, R*T, S]
        scores = scores.float().view(b, g, r, t, -1) + bias[:, :, None]  # [B, G, R, T, S]
        probs = F.softmax(scores, dim=-1).to(q.dtype).view(b, g, r * t, -1)
        out = torch.matmul(probs, v)  # [B, G, R*T, D]
        out = out.view(b, self.n_heads, t, d).transpose(1, 2).reshape(b, t, -1)  # [B, T, N*D]
        return self.wo(out), k, v
