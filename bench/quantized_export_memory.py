"""Peak memory of exporting a GPTQ int4 checkpoint of Mixtral 8x7B's dimensions (hidden 4096, intermediate
14336, 8 experts, 32 / 8 heads) cut to a few layers: the quantized streaming export stays bounded by about one
linear's unpacked codes, not by the checkpoint.

The checkpoint is synthetic: random int32 code words, scales, zero points and (act-order) a random g_idx per
input, written layer by layer (one safetensors file each) so the writer never holds more than a layer; the
export runs in a child process (export_memory.measure_export) that reports its own peak RSS.

    python -m mixtral_trt.bench.quantized_export_memory OUT_DIR [--layers 1] [--act-order]

T bytes: the checkpoint's; one layer's bytes: its quantized linears as stored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mixtral_trt.mixtral_ref.presets import get_preset

from .export_memory import checkpoint_bytes, measure_export

GROUP = 128
BITS = 4


def _linear(rng: np.random.Generator, base: str, n: int, k: int, order: np.ndarray | None) -> dict[str, np.ndarray]:
    """GPTQ tensors of one [n, k] int4 linear (v2 zero points), codes random."""
    p, g = 32 // BITS, k // GROUP
    g_idx = np.arange(k, dtype=np.int32) // GROUP
    if order is not None:
        g_idx = g_idx[np.argsort(order)]  # the inputs of group j are order[j*GROUP : (j+1)*GROUP]
    return {f"{base}.qweight": rng.integers(-2**31, 2**31 - 1, (k // p, n), dtype=np.int32),
            f"{base}.qzeros": np.full((g, n // p), 0x77777777, np.int32),  # zero point 7 (gptq v1: 8)
            f"{base}.scales": (rng.random((g, n), np.float32) * 1e-2 + 1e-3).astype(np.float16),
            f"{base}.g_idx": g_idx}


def write_checkpoint(out: Path, layers: int = 1, act_order: bool = False, seed: int = 0) -> int:
    """Write the synthetic GPTQ int4 checkpoint into `out`; returns one layer's stored bytes."""
    from safetensors.numpy import save_file

    cfg = get_preset("mixtral-8x7b").replace(num_layers=layers)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map: dict[str, str] = {}
    h, i, kv = cfg.hidden_size, cfg.intermediate_size, cfg.kv_size
    layer_bytes = 0
    for n_layer in range(layers):
        prefix = f"model.layers.{n_layer}"
        qkv_order = rng.permutation(h) if act_order else None
        tensors = {}
        for name, n, k, order in (("q_proj", cfg.q_size, h, qkv_order), ("k_proj", kv, h, qkv_order),
                                  ("v_proj", kv, h, qkv_order),
                                  ("o_proj", h, cfg.q_size, rng.permutation(cfg.q_size) if act_order else None)):
            tensors |= _linear(rng, f"{prefix}.self_attn.{name}", n, k, order)
        for e in range(cfg.num_experts):
            base = f"{prefix}.block_sparse_moe.experts.{e}"
            up_order = rng.permutation(h) if act_order else None
            tensors |= _linear(rng, f"{base}.w1", i, h, up_order) | _linear(rng, f"{base}.w3", i, h, up_order)
            tensors |= _linear(rng, f"{base}.w2", h, i, rng.permutation(i) if act_order else None)
        layer_bytes = sum(t.nbytes for t in tensors.values())
        tensors[f"{prefix}.block_sparse_moe.gate.weight"] = rng.standard_normal((cfg.num_experts, h), np.float32
                                                                                ).astype(np.float16)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}.{norm}.weight"] = np.ones(h, np.float16)
        name = f"model-{n_layer + 1:05d}-of-{layers + 1:05d}.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, out / name)
        weight_map |= dict.fromkeys(tensors, name)
        del tensors
    embed = {"model.embed_tokens.weight": (rng.standard_normal((cfg.vocab_size, h), np.float32) * 0.02),
             "lm_head.weight": (rng.standard_normal((cfg.vocab_size, h), np.float32) * 0.02),
             "model.norm.weight": np.ones(h, np.float32)}
    name = f"model-{layers + 1:05d}-of-{layers + 1:05d}.safetensors"
    save_file({k: v.astype(np.float16) for k, v in embed.items()}, out / name)
    weight_map |= dict.fromkeys(embed, name)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = cfg.to_hf_dict() | {"quantization_config": {
        "quant_method": "gptq", "bits": BITS, "group_size": GROUP, "desc_act": act_order, "sym": False,
        "checkpoint_format": "gptq_v2", "lm_head": False}}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return layer_bytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--act-order", action="store_true")
    args = parser.parse_args(argv)
    ckpt = args.out / "checkpoint"
    layer = write_checkpoint(ckpt, args.layers, args.act_order)
    result = measure_export(ckpt, args.out / "onnx", dtype="fp16", extra=("--max-seq", "64", "--max-batch", "1"))
    report = {**result.to_dict(), "layers": args.layers, "act_order": args.act_order,
              "one_layer_quantized_bytes": layer, "checkpoint_bytes_on_disk": checkpoint_bytes(ckpt),
              "export_bytes": sum(f.stat().st_size for f in (args.out / "onnx").iterdir())}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
