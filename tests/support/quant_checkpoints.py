"""Tiny quantized Mixtral checkpoints written with each format's own producer code (importable as
`support.quant_checkpoints`): compressed-tensors' compressors and config for pack-quantized / float-quantized,
onnxruntime-genai's GPTQ / AWQ int32 packer for GPTQ and AWQ (gptqmodel and autoawq do not install on a
CPU-only torch here). The integer codes come from round-to-nearest over min / max (the producers' calibration
is not what is tested: the storage is). Each builder returns the producer's dequantization of every quantized
linear (stored name of its float weight -> float32 [N, K]) where the producer has one (compressed-tensors);
GPTQ / AWQ tests unpack with onnxruntime-genai's loaders.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.mixtral_ref.writer import save_checkpoint

from .models import random_model

# hidden 128 / intermediate 256: every group size (32 / 64 / 128) divides both, N multiples of 8
QUANT_CFG = MixtralConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=32, num_experts=4, top_k=2, max_position_embeddings=256)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def linear_names(cfg: MixtralConfig, lm_head: bool = False) -> list[str]:
    """HF module names of the linears a checkpoint quantizes: attention projections, experts (and LM head)."""
    names = []
    for i in range(cfg.num_layers):
        names += [f"model.layers.{i}.self_attn.{p}_proj" for p in "qkvo"]
        names += [f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}" for e in range(cfg.num_experts)
                  for w in ("w1", "w2", "w3")]
    return names + (["lm_head"] if lm_head else [])


def _float_checkpoint(out: Path, cfg: MixtralConfig, seed: int) -> dict[str, torch.Tensor]:
    save_checkpoint(random_model(cfg, seed), cfg, out, layout="hub")
    return load_file(out / "model.safetensors")


def _finish(out: Path, tensors: dict[str, torch.Tensor], quantization_config: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(config, indent=2))


def _rtn(w: torch.Tensor, bits: int, groups: torch.Tensor, n_groups: int, sym: bool):
    """Round-to-nearest codes [N, K] (unsigned), scales [N, G] float16 and zeros [N, G] of w [N, K]."""
    maxq = (1 << bits) - 1
    lo = torch.stack([w[:, groups == g].min(1).values for g in range(n_groups)], 1).clamp(max=0)
    hi = torch.stack([w[:, groups == g].max(1).values for g in range(n_groups)], 1).clamp(min=0)
    if sym:
        scale = (torch.maximum(hi, -lo) * 2 / maxq).half()
        zero = torch.full_like(scale, (maxq + 1) // 2, dtype=torch.int32)
    else:
        scale = ((hi - lo) / maxq).half()
        zero = torch.round(-lo / scale.float()).clamp(1, maxq - 1).to(torch.int32)  # 1..maxq-1: v1 can store it
    codes = torch.clamp(torch.round(w / scale.float()[:, groups]) + zero[:, groups], 0, maxq).to(torch.int32)
    return codes, scale, zero


def _ort_genai():
    from onnxruntime_genai.models.loaders.awq import AWQModel

    return object.__new__(AWQModel)  # only its int32 pack / unpack methods are used


def write_gptq(out: Path, bits: int = 4, group_size: int = 32, desc_act: bool = False, sym: bool = True,
               checkpoint_format: str = "gptq", cfg: MixtralConfig = QUANT_CFG, seed: int = 0,
               lm_head: bool = False, split_orders: bool = False) -> None:
    """A GPTQ checkpoint: qweight packed along K, qzeros along N (v1: zero - 1), scales, g_idx (act-order: a
    random input permutation, as GPTQ's Hessian order gives, one per input: linears reading the same activations
    share it; `split_orders`: each linear its own, which GPTQ never writes for an expert's w1 and w3)."""
    tensors, packer = _float_checkpoint(out, cfg, seed), _ort_genai()
    gen = torch.Generator().manual_seed(seed + 1)
    orders: dict[str, torch.Tensor] = {}
    for base in linear_names(cfg, lm_head):
        w = tensors.pop(f"{base}.weight").float()
        n, k = w.shape
        gs = group_size if group_size > 0 else k
        g_idx = torch.arange(k, dtype=torch.int32) // gs
        if desc_act:  # linears reading the same input (q/k/v; an expert's w1/w3) share its Hessian's order
            source = re.sub(r"\.(q|k|v)_proj$", ".qkv", re.sub(r"\.w[13]$", ".w13", base))
            if source not in orders or split_orders:
                orders[source] = torch.argsort(torch.rand(k, generator=gen))
            g_idx = g_idx[orders[source]]
        codes, scale, zero = _rtn(w, bits, g_idx.long(), k // gs, sym)
        stored_zero = zero - 1 if checkpoint_format == "gptq" else zero
        tensors[f"{base}.qweight"] = packer.pack_on_row(codes.T.contiguous(), bits, transpose=True)
        tensors[f"{base}.qzeros"] = packer.pack_on_row(stored_zero.T.contiguous(), bits, transpose=False)
        tensors[f"{base}.scales"] = scale.T.contiguous()
        tensors[f"{base}.g_idx"] = g_idx
    _finish(out, tensors, {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act,
                           "sym": sym, "checkpoint_format": checkpoint_format, "lm_head": lm_head,
                           "true_sequential": True, "damp_percent": 0.01, "static_groups": False})


def write_awq(out: Path, group_size: int = 32, cfg: MixtralConfig = QUANT_CFG, seed: int = 0) -> None:
    """An AWQ GEMM checkpoint: qweight [K, N/8] and qzeros [G, N/8] with AWQ's nibble order, scales [G, N]."""
    tensors, packer = _float_checkpoint(out, cfg, seed), _ort_genai()
    order = torch.tensor(AWQ_ORDER)

    def pack(v: torch.Tensor) -> torch.Tensor:  # [R, C] ints -> [R, C/8] int32, nibble i = column order[i]
        r, c = v.shape
        return packer.pack_on_row(v.reshape(r, c // 8, 8)[:, :, order].reshape(r, c).contiguous(), 4, False)

    for base in linear_names(cfg):
        w = tensors.pop(f"{base}.weight").float()
        n, k = w.shape
        codes, scale, zero = _rtn(w, 4, torch.arange(k) // group_size, k // group_size, sym=False)
        tensors[f"{base}.qweight"] = pack(codes.T.contiguous())
        tensors[f"{base}.qzeros"] = pack(zero.T.contiguous())
        tensors[f"{base}.scales"] = scale.T.contiguous()
    _finish(out, tensors, {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
                           "version": "gemm", "modules_to_not_convert": None})


def ct_scheme(fmt: str, bits: int = 4, strategy: str = "group", group_size: int | None = 32, sym: bool = True):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    if fmt == "float-quantized":
        args = QuantizationArgs(num_bits=8, type="float", strategy=strategy, symmetric=True)
    else:
        args = QuantizationArgs(num_bits=bits, type="int", strategy=strategy, symmetric=sym,
                                group_size=group_size if strategy == "group" else None)
    return QuantizationScheme(targets=["Linear"], weights=args)


def write_compressed(out: Path, fmt: str = "pack-quantized", bits: int = 4, strategy: str = "group",
                     group_size: int | None = 32, sym: bool = True, cfg: MixtralConfig = QUANT_CFG,
                     seed: int = 0, scale_dtype: torch.dtype = torch.bfloat16,
                     actorder: bool = False) -> dict[str, torch.Tensor]:
    """A compressed-tensors checkpoint written by its compressors (pack-quantized int / float-quantized FP8),
    its quantization_config by compressed-tensors' QuantizationConfig; router and LM head in `ignore`.
    Returns compressed-tensors' own decompression of each linear (scales cast to float32 first, so its
    arithmetic is exact float32 like ours).

    `actorder` (group strategy): `actorder: group`, each linear's groups a random set of input channels (one
    permutation per input, as GPTQ's Hessian order gives) named by `weight_g_idx`. compressed-tensors 0.20 no
    longer writes that: its QuantizationArgs refuses actorder "group" ("has been removed") and neither its
    quantize / dequantize nor its compressors take a g_idx (0.12 took one: compress_weight(..., g_idx)). So the
    closest path through its own code: its compressor quantizes and packs the weight with its input channels
    permuted into contiguous groups (w[:, perm]), its unpack_from_int32 / pack_to_int32 put the codes back in
    the stored column order, weight_g_idx[perm[j]] = j // group_size, and the oracle is its decompression of the
    permuted weight, columns put back; the config is its QuantizationConfig with actorder set to "group"."""
    from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    scheme = ct_scheme(fmt, bits, strategy, group_size, sym)
    compressor = FloatQuantizationCompressor if fmt == "float-quantized" else PackedQuantizationCompressor
    tensors, oracle = _float_checkpoint(out, cfg, seed), {}
    gen, perms = torch.Generator().manual_seed(seed + 2), {}
    for base in linear_names(cfg):
        w = tensors.pop(f"{base}.weight").float()
        n, k = w.shape
        perm = None
        if actorder:  # the input channels of group j: perm[j * group_size : (j + 1) * group_size]
            source = re.sub(r"\.(q|k|v)_proj$", ".qkv", re.sub(r"\.w[13]$", ".w13", base))
            perm = perms.setdefault(source, torch.randperm(k, generator=gen))
            w = w[:, perm]
        if strategy == "tensor":
            lo, hi = w.min().reshape(1), w.max().reshape(1)
        elif strategy == "channel":
            lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        else:
            grouped = w.reshape(n, k // group_size, group_size)
            lo, hi = grouped.min(-1).values, grouped.max(-1).values
        scale, zero = calculate_qparams(lo, hi, scheme.weights)
        scale = scale.to(scale_dtype)
        state = {"weight": w, "weight_scale": scale, "weight_zero_point": zero}
        stored = compressor.compress(state, scheme)
        exact = {**stored, "weight_scale": stored["weight_scale"].float()}
        dequantized = compressor.decompress(exact, scheme)["weight"].float()
        if perm is not None:
            back = torch.argsort(perm)
            codes = unpack_from_int32(stored["weight_packed"], bits, torch.Size((n, k)))
            stored["weight_packed"] = pack_to_int32(codes[:, back].contiguous(), bits)
            stored["weight_g_idx"] = (torch.arange(k, dtype=torch.int32) // group_size)[back]
            dequantized = dequantized[:, back]
        for name, t in stored.items():
            tensors[f"{base}.{name}"] = t
        oracle[f"{base}.weight"] = dequantized
    config = QuantizationConfig(config_groups={"group_0": scheme}, format=fmt, quantization_status="compressed",
                                ignore=["lm_head", "re:.*block_sparse_moe.gate$"]).model_dump(mode="json")
    if actorder:  # compressed-tensors 0.20 refuses to construct it (above); as its older versions saved it
        config["config_groups"]["group_0"]["weights"]["actorder"] = "group"
    _finish(out, tensors, {**config, "quant_method": "compressed-tensors"})
    return oracle
