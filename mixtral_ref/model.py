"""The reference Mixtral: decoder blocks of GQA attention + sparse MoE, with the KV cache as plain tensors.

Prefill and incremental decoding run through the same forward: pass the `present` of one call as the
`past` of the next. B batch, T new tokens, P past tokens, S = P + T, V vocab, L layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mixtral_trt.common.config import MixtralConfig

from .layers import Attention, RMSNorm, attention_bias, rope_cos_sin
from .moe import MoE

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (key, value), each [B, G, P, D]


@dataclass
class MixtralOutput:
    logits: torch.Tensor  # [B, T, V]
    present: KVCache  # per layer, [B, G, S, D]
    hidden_states: list[torch.Tensor]  # per layer output (residual stream) [B, T, H]
    router_logits: list[torch.Tensor]  # per layer [B*T, E]


class Block(nn.Module):
    def __init__(self, cfg: MixtralConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.moe_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.moe = MoE(cfg)

    def forward(self, x, cos, sin, bias, past_k, past_v):
        a, k, v = self.attn(self.attn_norm(x), cos, sin, bias, past_k, past_v)
        h = x + a  # [B, T, H]
        m, router_logits = self.moe(self.moe_norm(h))
        return h + m, k, v, router_logits


def run_layers(layers: nn.ModuleList, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
               past: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list, list, list]:
    """x [B, T, H] through every block: (x, present [(k, v)], hidden states, router logits) per layer."""
    present, hidden, routers = [], [], []
    for layer, (past_k, past_v) in zip(layers, past, strict=True):
        x, k, v, router_logits = layer(x, cos, sin, bias, past_k, past_v)
        present.append((k, v))
        hidden.append(x)
        routers.append(router_logits)
    return x, present, hidden, routers


class Mixtral(nn.Module):
    def __init__(self, cfg: MixtralConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def empty_cache(self, batch: int) -> KVCache:
        """A cache holding no tokens (P = 0), the `past` of a prefill."""
        cfg, w = self.config, self.embed.weight
        shape = (batch, cfg.num_kv_heads, 0, cfg.head_dim)
        return [(w.new_zeros(shape), w.new_zeros(shape)) for _ in range(cfg.num_layers)]

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past: KVCache | None = None,
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V]."""
        return self.run(input_ids, position_ids, attention_mask, past).logits

    def run(
        self,
        input_ids: torch.Tensor,  # [B, T] int64
        position_ids: torch.Tensor | None = None,  # [B, T] int64, default P .. P+T-1
        attention_mask: torch.Tensor | None = None,  # [B, S] int64 key-padding mask, default all ones
        past: KVCache | None = None,  # per layer [B, G, P, D]
    ) -> MixtralOutput:
        cfg = self.config
        b, t = input_ids.shape
        past = self.empty_cache(b) if past is None else past
        p = past[0][0].shape[2]
        if position_ids is None:
            position_ids = (torch.arange(t, device=input_ids.device) + p).expand(b, t)
        if attention_mask is None:
            attention_mask = torch.ones(b, p + t, dtype=torch.int64, device=input_ids.device)
        x = self.embed(input_ids)  # [B, T, H]
        cos, sin = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, x.dtype)  # [B, T, D]
        bias = attention_bias(attention_mask, p, t, cfg.sliding_window)  # [B, 1, T, S]
        x, present, hidden, routers = run_layers(self.layers, x, cos, sin, bias, past)
        x = self.norm(x)
        logits = self.lm_head(x) if self.lm_head is not None else x @ self.embed.weight.T  # [B, T, V]
        return MixtralOutput(logits, present, hidden, routers)
