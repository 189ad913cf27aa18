"""One rank of a tensor-parallel Mixtral: the reference layers with the rank's heads, expert rows and
vocabulary rows, and the collectives where the partial sums meet.

`RankMixtral.run` has the signature and outputs of `mixtral_ref.Mixtral.run` (the present KV cache holds
the rank's kv heads), so the exporter traces it exactly like the reference. The state dict has the
reference's keys (each tensor the rank's slice, `weights.py`) plus `vocab_start`, the first vocabulary row
of the rank: the only difference between rank graphs is in their weights.
B batch, T new tokens, H hidden, V vocab, Vs vocabulary rows per rank, N ranks.
"""

from __future__ import annotations

import torch
from torch import nn

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.tensor_parallel import TensorParallel
from mixtral_trt.mixtral_ref.layers import RMSNorm, attention_bias, rope_cos_sin
from mixtral_trt.mixtral_ref.model import Block, MixtralOutput, run_layers

from . import collectives  # noqa: F401  (defines torch.ops.mixtral_tp.*)


def collective_joins(num_layers: int) -> list[str]:
    """What each collective of a rank graph joins, in graph order."""
    return ["embedding", *[f"{part}.{i}" for i in range(num_layers) for part in ("attention", "moe")], "logits"]


class RankBlock(Block):
    """The reference's Block on one rank's share (`local`: its heads and expert rows), each partial sum
    all-reduced before it joins the residual stream."""

    def __init__(self, local: MixtralConfig, world_size: int) -> None:
        super().__init__(local)
        self.world_size = world_size

    def forward(self, x, cos, sin, bias, past_k, past_v):
        a, k, v = self.attn(self.attn_norm(x), cos, sin, bias, past_k, past_v)  # a: this rank's heads' share
        h = x + torch.ops.mixtral_tp.all_reduce(a, self.world_size)  # [B, T, H]
        m, router_logits = self.moe(self.moe_norm(h))  # m: this rank's expert rows' share
        return h + torch.ops.mixtral_tp.all_reduce(m, self.world_size), k, v, router_logits


class RankMixtral(nn.Module):
    def __init__(self, cfg: MixtralConfig, tp: TensorParallel) -> None:
        super().__init__()
        self.full_config, self.tp = cfg, tp
        self.config = tp.local_config(cfg)  # the rank's heads and expert rows (what _sample_inputs reads)
        vs = tp.vocab_rows(cfg)
        self.embed = nn.Embedding(vs, cfg.hidden_size)
        self.register_buffer("vocab_start", torch.zeros((), dtype=torch.int64))
        self.layers = nn.ModuleList(RankBlock(self.config, tp.world_size) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, vs, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def run(
        self,
        input_ids: torch.Tensor,  # [B, T] int64
        position_ids: torch.Tensor,  # [B, T] int64
        attention_mask: torch.Tensor,  # [B, P + T] int64
        past: list[tuple[torch.Tensor, torch.Tensor]],  # per layer [B, G_rank, P, D]
    ) -> MixtralOutput:
        cfg, n = self.full_config, self.tp.world_size
        vs = self.embed.weight.shape[0]
        b, t = input_ids.shape
        p = past[0][0].shape[2]
        local = input_ids - self.vocab_start  # [B, T]
        mine = (local >= 0) & (local < vs)
        x = self.embed(local.clamp(0, vs - 1)) * mine[..., None].to(self.dtype)  # [B, T, H], 0 off this rank
        x = torch.ops.mixtral_tp.all_reduce(x, n)
        cos, sin = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, x.dtype)  # [B, T, D]
        bias = attention_bias(attention_mask, p, t, cfg.sliding_window)  # [B, 1, T, S]
        x, present, hidden, routers = run_layers(self.layers, x, cos, sin, bias, past)
        x = self.norm(x)
        head = self.lm_head.weight if self.lm_head is not None else self.embed.weight  # [Vs, H]
        part = (x @ head.T).float().reshape(b * t, vs)  # [B*T, Vs]: this rank's vocabulary rows
        rows = torch.ops.mixtral_tp.all_gather(part.T.contiguous(), n)  # [N*Vs, B*T]
        logits = rows.T[:, : cfg.vocab_size].reshape(b, t, cfg.vocab_size)  # [B, T, V]
        return MixtralOutput(logits, present, hidden, routers)
