"""An act-order (`actorder: group`, `weight_g_idx`) pack-quantized checkpoint written by compressed-tensors 0.12.2,
a version that still writes it (0.19 / 0.20 refuse actorder "group"), from a float `hub` checkpoint, with 0.12.2's
own dequantization of every linear beside it: the oracle our reader was checked against once (README, "Act-order
`group` from the producers"). Runs in a throwaway venv layered over the project's, nothing in the package imports
it, no test runs it:

    python3 -m venv /tmp/ct012 && echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/ct012/lib/python3.11/site-packages/main-venv.pth
    /tmp/ct012/bin/pip install --no-deps compressed-tensors==0.12.2
    /tmp/ct012/bin/python bench/ct_actorder_group.py FLOAT_CKPT OUT sym|asym     # writes OUT, OUT.oracle.safetensors

Attention projections and expert linears int4 group 32 (q / k / v and an expert's w1 / w3 share their input
permutation, as GPTQ's Hessian order gives), router and LM head float; 0.12.2's decompress_weight refuses packed
zero points, so the asymmetric oracle is its unpack_from_int32 + dequantize(..., g_idx=...).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

GS = 32  # inputs per group


def main(argv: list[str] | None = None) -> None:
    import compressed_tensors
    import torch
    from compressed_tensors.compressors import PackedQuantizationCompressor
    from compressed_tensors.compressors.quantized_compressors.pack_quantized import unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.utils import calculate_qparams
    from safetensors.torch import load_file, save_file

    argv = sys.argv[1:] if argv is None else argv
    src, out, sym = Path(argv[0]), Path(argv[1]), argv[2] == "sym"
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    tensors = load_file(src / "model.safetensors")
    args = QuantizationArgs(num_bits=4, type="int", symmetric=sym, strategy="group", group_size=GS, actorder="group")
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    comp = PackedQuantizationCompressor(config=None)
    gen, perms, oracle = torch.Generator().manual_seed(7), {}, {}
    for name in sorted(tensors):
        if not re.search(r"(self_attn\.[qkvo]_proj|experts\.\d+\.w[123])\.weight$", name):
            continue
        w = tensors.pop(name).float()
        base = name.removesuffix(".weight")
        n, k = w.shape
        source = re.sub(r"\.(q|k|v)_proj$", ".qkv", re.sub(r"\.w[13]$", ".w13", base))
        perm = perms.setdefault(source, torch.randperm(k, generator=gen))
        g_idx = torch.empty(k, dtype=torch.int32)
        g_idx[perm] = torch.arange(k, dtype=torch.int32) // GS
        lo = torch.stack([w[:, g_idx == g].min(1).values for g in range(k // GS)], 1)
        hi = torch.stack([w[:, g_idx == g].max(1).values for g in range(k // GS)], 1)
        scale, zero = calculate_qparams(lo, hi, args)
        scale = scale.to(torch.bfloat16)
        stored = comp.compress_weight(w, scale.float(), args, zero_point=zero, g_idx=g_idx)
        stored |= {"weight_scale": scale, "weight_g_idx": g_idx}
        for s, t in stored.items():
            tensors[f"{base}.{s}"] = t.contiguous()
        if sym:
            oracle[name] = comp.decompress_weight({**stored, "weight_scale": scale.float()}, args).float().contiguous()
        else:  # 0.12.2's decompress_weight refuses packed zero points: its unpack + dequantize(g_idx=...) instead
            codes = unpack_from_int32(stored["weight_packed"], 4, torch.Size((n, k)))
            zp = unpack_from_int32(stored["weight_zero_point"], 4, torch.Size((n, k // GS)), packed_dim=0)
            oracle[name] = dequantize(codes, scale.float(), zp, args, g_idx=g_idx).float().contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    save_file(oracle, out.with_name(out.name + ".oracle.safetensors"))
    config = json.loads((src / "config.json").read_text())
    qc = QuantizationConfig(config_groups={"group_0": scheme}, format="pack-quantized",
                            quantization_status="compressed", ignore=["lm_head", "re:.*block_sparse_moe.gate$"])
    config["quantization_config"] = {**qc.model_dump(mode="json"), "quant_method": "compressed-tensors"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    print("compressed-tensors", compressed_tensors.__version__, "wrote", len(oracle), "linears; actorder",
          config["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"])


if __name__ == "__main__":
    main()
