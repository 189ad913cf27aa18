"""The reference model of a quantized engine: mixtral_ref with every quantized weight replaced by its
dequantized codes (scales rounded to the activation dtype, as stored), so an engine's parity measures its
kernels, not the quantization; the quantization error itself is reported against the original model.

Some fast kernels also quantize their *activations*: ONNX Runtime's CPU QMoE (8-bit experts) and
MatMulNBits (accuracy_level 4) round each block of `block_size` inputs of a quantized matmul to int8
(symmetric, scale = max |x| / 127, round to nearest even) and accumulate in int32. `activations_block`
makes the reference do the same before every quantized matmul, so such an engine is judged against what
its kernels compute. An act-order checkpoint's engine takes each matmul's inputs in the order of its codes
(exporter/quantize_stored.py), so its blocks are blocks of that order: `input_orders` gives them to the
reference. T tokens, H hidden, I intermediate, K a matmul's input features.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixtral_trt.common.dtypes import torch_dtype
from mixtral_trt.common.quant import QuantScheme

from .model import Mixtral
from .moe import MoE


def quantize_activations(x: torch.Tensor, block: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] -> each block of `block` values along K rounded to int8 with its own scale (float32); `order`
    (int64 [K]): the blocks are blocks of x[..., order] (an act-order engine's input order)."""
    if order is not None:
        out = torch.empty(x.shape, dtype=torch.float32)
        out[..., order] = quantize_activations(x[..., order], block)
        return out
    xf = x.float()
    blocks = xf.reshape(*xf.shape[:-1], xf.shape[-1] // block, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = amax / 127
    inverse = torch.where(amax > 0, 1 / scale, torch.zeros_like(scale))
    return (torch.round(blocks * inverse) * scale).reshape(xf.shape)


class MoEA8(MoE):
    """The MoE block with int8 activations at each expert matmul (x before w13, SwiGLU output before w2)."""

    block: int = 32
    orders: dict = {}  # ("w13" | "w2", expert) -> the order of that matmul's inputs (act-order checkpoints)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])  # [T, H]
        router_logits = self.gate(flat)  # [T, E]
        weights, experts = torch.ops.mixtral.moe_router(router_logits, self.top_k)  # [T, k]
        out = torch.zeros(flat.shape, dtype=torch.float32)
        for e in experts.unique().tolist():
            tokens, slot = (experts == e).nonzero(as_tuple=True)  # [n]
            xq = quantize_activations(flat[tokens], self.block, self.orders.get(("w13", e)))
            gate, up = F.linear(xq, self.w13[e].float()).chunk(2, dim=-1)  # [n, I]
            a = quantize_activations(F.silu(gate) * up, self.block, self.orders.get(("w2", e)))
            y = F.linear(a, self.w2[e].float())  # [n, H]
            out.index_add_(0, tokens, y * weights[tokens, slot, None])
        return out.to(x.dtype).view_as(x), router_logits


def _fake_quantize_param(param: nn.Parameter, scheme: QuantScheme, dtype: str) -> None:
    w = param.float().numpy()
    scales = torch.from_numpy(scheme.scales_for(w)).to(torch_dtype(dtype)).float().numpy()
    param.copy_(torch.from_numpy(scheme.dequantize(scheme.encode(w, scales), scales)).to(param.dtype))


def dense_linears(model: Mixtral) -> list[nn.Linear]:
    """The linears `export --quantize` stores as LinearQ: attention projections and an untied LM head."""
    out = [lin for layer in model.layers for lin in (layer.attn.wq, layer.attn.wk, layer.attn.wv, layer.attn.wo)]
    return out + ([model.lm_head] if model.lm_head is not None else [])


EXPERT_KEY = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight$")
DENSE_KEY = {"q": "wq", "k": "wk", "v": "wv", "o": "wo"}


def _orders_of(input_orders: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Checkpoint key -> input order as (layer -> {("w13" | "w2", expert): order}, reference parameter name ->
    order) for the matmuls whose activations the engine rounds in that order."""
    experts: dict[int, dict] = {}
    dense = {}
    for key, order in input_orders.items():
        t = torch.from_numpy(np.asarray(order, np.int64))
        if m := EXPERT_KEY.match(key):
            experts.setdefault(int(m[1]), {})[("w2" if m[3] == "w2" else "w13", int(m[2]))] = t
        elif m := re.match(r"^model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight$", key):
            dense[f"layers.{m[1]}.attn.{DENSE_KEY[m[2]]}.weight"] = t
        elif key == "lm_head.weight":
            dense["lm_head.weight"] = t
    return experts, dense


@torch.no_grad()
def fake_quantize_(model: Mixtral, scheme: QuantScheme, dtype: str, dense: bool = False,
                   activations_block: int | None = None, stored: list[str] | None = None,
                   input_orders: dict[str, np.ndarray] | None = None) -> Mixtral:
    """In place: w13 and w2 of every layer (and with `dense` the attention projections and the LM head) become
    dequantize(encode(w)) as the export stores them; with `activations_block`, every quantized matmul also
    rounds its inputs to int8 in blocks of that size, as the engine's kernels do. `stored`: the model was loaded
    from a quantized checkpoint whose codes the export kept (its weights are already the format's
    dequantization); only those dense linears (parameter names) are quantized, and no weight changes.
    `input_orders` (checkpoint key -> input order, checkpoint.input_orders): an act-order checkpoint's, whose
    engine rounds each matmul's activations in blocks of that order."""
    expert_orders, dense_orders = _orders_of(input_orders or {})
    for i, layer in enumerate(model.layers):
        for param in (layer.moe.w13, layer.moe.w2):
            if stored is None:
                _fake_quantize_param(param, scheme, dtype)
        if activations_block:
            moe = MoEA8.__new__(MoEA8)
            moe.__dict__.update(layer.moe.__dict__)
            moe.block, moe.orders = activations_block, expert_orders.get(i, {})
            layer.moe = moe
    if dense:
        named = {f"{name}.weight": m for name, m in model.named_modules()}
        for name in [f"{n}.weight" for n, m in model.named_modules() if m in dense_linears(model)] \
                if stored is None else stored:
            linear = named[name]
            if stored is None:
                _fake_quantize_param(linear.weight, scheme, dtype)
            if activations_block:
                order = dense_orders.get(name)
                linear.register_forward_pre_hook(
                    lambda _m, args, b=activations_block, o=order:
                    (quantize_activations(args[0], b, o).to(args[0].dtype),))
    return model


@torch.no_grad()
def round_experts_(model: Mixtral, dtype: str) -> Mixtral:
    """In place: w13 and w2 of every layer rounded to `dtype` and back (an engine storing its experts in bf16
    while computing in float32: `build --expert-dtype bf16`)."""
    for layer in model.layers:
        for param in (layer.moe.w13, layer.moe.w2):
            param.copy_(param.to(torch_dtype(dtype)).to(param.dtype))
    return model


@torch.no_grad()
def round_linears_(model: Mixtral, dtype: str, kinds: tuple[str, ...] = ("lm_head", "projections")) -> Mixtral:
    """In place: the dense linears of `kinds` ("projections": the attention projections; "lm_head": an untied LM
    head) rounded to `dtype` and back (an engine whose own kernels store them in bf16: `build --expert-dtype bf16`
    with our CPU linears)."""
    linears = dense_linears(model)
    picked = [lin for lin in linears[: 4 * len(model.layers)] if "projections" in kinds]
    if "lm_head" in kinds and model.lm_head is not None:
        picked.append(model.lm_head)
    for linear in picked:
        linear.weight.copy_(linear.weight.to(torch_dtype(dtype)).to(linear.weight.dtype))
    return model


def scheme_of(contract) -> QuantScheme | None:
    spec = contract.extra.get("quantization")
    return QuantScheme(spec["bits"], spec["block_size"]) if spec else None


def stored_of(contract) -> list[str] | None:
    """The dense linears of an export that kept a quantized checkpoint's codes (None: quantized by export)."""
    spec = contract.extra.get("quantization") or {}
    return list(spec.get("linears", [])) if spec.get("source") == "checkpoint" else None


def dense_of(contract) -> bool:
    """Whether the export quantized the attention projections and the LM head too."""
    return bool((contract.extra.get("quantization") or {}).get("dense"))
