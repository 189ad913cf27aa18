"""One key-map table per checkpoint layout: how each `Mixtral` parameter is stored on disk.

Layouts:
  hub           HF hub: `model.layers.{i}.block_sparse_moe.experts.{e}.w1/w2/w3.weight` (transformers 4 files,
                and what transformers 5 `save_pretrained` still writes)
  fused         transformers 5 in-memory names: `model.layers.{i}.mlp.experts.gate_up_proj` [E, 2I, H]
                (rows [0, I) gate, [I, 2I) up) and `down_proj` [E, H, I]
  consolidated  mistral-inference `consolidated*.safetensors` + `params.json`; wq/wk rows in the interleaved
                (complex) RoPE order, permuted here into the rotate-half order of the reference

A `Part` is one stored tensor; an `Entry` builds one reference parameter from its parts (`combine`) and
splits it back (`split`, for the writer).
E experts, H hidden, I intermediate, N heads, G kv heads, D head_dim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from mixtral_trt.common.config import MixtralConfig

LAYOUTS = ("hub", "fused", "consolidated")

# reference name -> stored name; "{i}" is the layer index. Expert weights are in _EXPERTS below.
_TOP = {
    "hub": {
        "embed.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    },
    "consolidated": {
        "embed.weight": "tok_embeddings.weight",
        "norm.weight": "norm.weight",
        "lm_head.weight": "output.weight",
    },
}
_TOP["fused"] = _TOP["hub"]

_HF_LAYER = {
    "attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "attn.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "attn.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "attn.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "attn.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "moe_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
}
_LAYER = {
    "hub": {**_HF_LAYER, "moe.gate.weight": "model.layers.{i}.block_sparse_moe.gate.weight"},
    "fused": {
        **_HF_LAYER,
        "moe.gate.weight": "model.layers.{i}.mlp.gate.weight",
        "moe.w13": "model.layers.{i}.mlp.experts.gate_up_proj",
        "moe.w2": "model.layers.{i}.mlp.experts.down_proj",
    },
    "consolidated": {
        "attn_norm.weight": "layers.{i}.attention_norm.weight",
        "attn.wq.weight": "layers.{i}.attention.wq.weight",
        "attn.wk.weight": "layers.{i}.attention.wk.weight",
        "attn.wv.weight": "layers.{i}.attention.wv.weight",
        "attn.wo.weight": "layers.{i}.attention.wo.weight",
        "moe_norm.weight": "layers.{i}.ffn_norm.weight",
        "moe.gate.weight": "layers.{i}.feed_forward.gate.weight",
    },
}
# Per-expert layouts: stored name of w1 / w3 / w2 for expert {e} of layer {i}.
_EXPERTS = {
    "hub": "model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight",
    "consolidated": "layers.{i}.feed_forward.experts.{e}.{w}.weight",
}
# Layouts whose wq / wk rows are in the interleaved RoPE order.
_INTERLEAVED_ROPE = {"consolidated"}


@dataclass(frozen=True)
class Part:
    key: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Entry:
    name: str  # reference parameter name
    shape: tuple[int, ...]
    parts: tuple[Part, ...]
    kind: str  # "copy" | "w13" (stack of cat(w1, w3)) | "w2" (stack) | "rope" (permuted rows)
    heads: int = 0  # for "rope": number of heads in the rows

    def combine(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "copy":
            return tensors[0]
        if self.kind == "rope":
            return interleaved_to_half(tensors[0], self.heads)
        if self.kind == "w13":  # parts: w1_0, w3_0, w1_1, w3_1, ...
            return torch.stack([torch.cat(tensors[j : j + 2], dim=0) for j in range(0, len(tensors), 2)])
        return torch.stack(tensors)  # "w2"

    def split(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "copy":
            return [tensor]
        if self.kind == "rope":
            return [half_to_interleaved(tensor, self.heads)]
        if self.kind == "w13":
            return [half for expert in tensor for half in expert.chunk(2, dim=0)]
        return list(tensor.unbind(0))  # "w2"


def interleaved_to_half(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of one head: (re0, im0, re1, im1, ...) -> (re0, re1, ..., im0, im1, ...). w [N*D, H]."""
    d = w.shape[0] // heads
    return w.reshape(heads, d // 2, 2, -1).transpose(1, 2).reshape(w.shape)


def half_to_interleaved(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of `interleaved_to_half`."""
    d = w.shape[0] // heads
    return w.reshape(heads, 2, d // 2, -1).transpose(1, 2).reshape(w.shape)


def reference_shapes(cfg: MixtralConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of `Mixtral(cfg)` with its shape, in `state_dict` order."""
    h, i, e, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (v, h)}
    for n in range(cfg.num_layers):
        shapes.update(
            {
                f"layers.{n}.attn_norm.weight": (h,),
                f"layers.{n}.attn.wq.weight": (cfg.q_size, h),
                f"layers.{n}.attn.wk.weight": (cfg.kv_size, h),
                f"layers.{n}.attn.wv.weight": (cfg.kv_size, h),
                f"layers.{n}.attn.wo.weight": (h, cfg.q_size),
                f"layers.{n}.moe_norm.weight": (h,),
                f"layers.{n}.moe.gate.weight": (e, h),
                f"layers.{n}.moe.w13": (e, 2 * i, h),
                f"layers.{n}.moe.w2": (e, h, i),
            }
        )
    shapes["norm.weight"] = (h,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, h)
    return shapes


_LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")


def plan(layout: str, cfg: MixtralConfig) -> list[Entry]:
    """The stored tensors (names and shapes) that make up every reference parameter in `layout`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    h, i = cfg.hidden_size, cfg.intermediate_size
    entries = []
    for name, shape in reference_shapes(cfg).items():
        m = _LAYER_NAME.fullmatch(name)
        if m is None:
            entries.append(Entry(name, shape, (Part(_TOP[layout][name], shape),), "copy"))
            continue
        layer, rest = m.group(1), m.group(2)
        if rest in _LAYER[layout]:
            kind, heads = "copy", 0
            if layout in _INTERLEAVED_ROPE and rest in ("attn.wq.weight", "attn.wk.weight"):
                kind, heads = "rope", cfg.num_heads if rest == "attn.wq.weight" else cfg.num_kv_heads
            entries.append(
                Entry(name, shape, (Part(_LAYER[layout][rest].format(i=layer), shape),), kind, heads)
            )
            continue
        template = _EXPERTS[layout]
        if rest == "moe.w13":
            parts = tuple(
                Part(template.format(i=layer, e=e, w=w), (i, h))
                for e in range(cfg.num_experts)
                for w in ("w1", "w3")
            )
        else:
            parts = tuple(Part(template.format(i=layer, e=e, w="w2"), (h, i)) for e in range(cfg.num_experts))
        entries.append(Entry(name, shape, parts, rest.removeprefix("moe.")))
    return entries


def detect_hf_layout(keys: set[str]) -> str | None:
    """'hub' or 'fused' from the stored key names of an HF checkpoint; None if neither is recognisable."""
    if any(".block_sparse_moe.experts." in k for k in keys):
        return "hub"
    if any(".mlp.experts." in k for k in keys):
        return "fused"
    return None
