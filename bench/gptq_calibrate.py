"""Calibrated GPTQ int4 of a float checkpoint with llm-compressor, to compare against our round-to-nearest int4.

llmcompressor cannot be installed under the lock (0.14 pins transformers <= 5.17 and pyyaml <= 6.0.3, and
compressed-tensors 0.19.0 where the lock has 0.20.1), so this runs in a throwaway venv outside the repository,
layered over the project's venv, with llmcompressor installed --no-deps (docs/BENCHMARKS.md, "Calibrated GPTQ
against round-to-nearest", has the commands). Nothing in the package imports this module.

    python -m mixtral_trt.bench.gptq_calibrate CKPT OUT [--text docs/eval_text.txt] [--skip 2048]
        [--samples 16] [--seq 256] [--group 128]

Calibration samples: `samples` windows of `seq` tokens taken from the text after its first `skip` tokens (so the
first 2048 tokens, which `mixtral-export eval --max-tokens 2048` scores, are never calibrated on). Recipe:
GPTQModifier on every Linear, W4A16-style weights (int4, symmetric, group `group`, no activation quantization),
the router and the LM head left float; saved compressed (compressed-tensors pack-quantized). `--method rtn`: the
same scheme by QuantizationModifier (round-to-nearest, no calibration data), the control in the same format.
Then two fix-ups so our reader takes the output (llmcompressor 0.14 under transformers 5.25): the expert linears'
names gate_proj / up_proj / down_proj become Mixtral's w1 / w3 / w2 (values untouched), and tokenizer.model is
copied from CKPT (save_pretrained writes tokenizer.json only). OUT/calibration.json records all of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def calibration_windows(ids: list[int], skip: int, samples: int, seq: int, bos: int) -> list[list[int]]:
    """`samples` consecutive windows of `seq` tokens of ids[skip:], each led by BOS."""
    rest = ids[skip:]
    windows = [[bos] + rest[i * (seq - 1):(i + 1) * (seq - 1)] for i in range(samples)]
    if len(windows[-1]) < seq:
        raise SystemExit(f"the text has {len(ids)} tokens: too few for {samples} x {seq} after the first {skip}")
    return windows


_EXPERT_NAMES = {".gate_proj.": ".w1.", ".up_proj.": ".w3.", ".down_proj.": ".w2."}


def rename_experts(ckpt: Path) -> int:
    """Rename llmcompressor 0.14's linearized expert tensors (experts.E.gate_proj / up_proj / down_proj) to the
    Mixtral hub names (experts.E.w1 / w3 / w2) in place; values untouched. Returns how many were renamed."""
    from safetensors.torch import load_file, save_file

    renamed = 0
    for f in sorted(ckpt.glob("*.safetensors")):
        tensors, out = load_file(f), {}
        for name, t in tensors.items():
            new = name
            if ".experts." in name:
                for old, hub in _EXPERT_NAMES.items():
                    new = new.replace(old, hub)
            renamed += new != name
            out[new] = t
        save_file(out, f, metadata={"format": "pt"})
    return renamed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--text", type=Path, default=Path("docs/eval_text.txt"))
    ap.add_argument("--skip", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--dampening", type=float, default=0.01)
    ap.add_argument("--method", choices=("gptq", "rtn"), default="gptq",
                    help="rtn: llmcompressor's QuantizationModifier, the same scheme rounded to nearest (control)")
    a = ap.parse_args(argv)

    import llmcompressor
    import torch
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.ckpt)
    ids = tok(a.text.read_text())["input_ids"]
    if ids and ids[0] == tok.bos_token_id:
        ids = ids[1:]
    windows = calibration_windows(ids, a.skip, a.samples, a.seq, tok.bos_token_id)
    data = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})

    model = AutoModelForCausalLM.from_pretrained(a.ckpt, dtype=torch.float32)
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=a.group))
    ignore = ["lm_head", "re:.*block_sparse_moe.gate$", "re:.*mlp.gate$"]
    if a.method == "gptq":
        recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=ignore, dampening_frac=a.dampening)
    else:
        recipe = QuantizationModifier(config_groups={"group_0": scheme}, ignore=ignore)
    t0 = time.perf_counter()
    oneshot(model=model, dataset=data if a.method == "gptq" else None, recipe=recipe,
            num_calibration_samples=len(windows), max_seq_length=a.seq, output_dir=None)
    took = time.perf_counter() - t0
    model.save_pretrained(a.out, save_compressed=True)
    tok.save_pretrained(a.out)
    shutil.copy(a.ckpt / "tokenizer.model", a.out / "tokenizer.model")  # save_pretrained writes tokenizer.json only
    renamed = rename_experts(a.out)
    info = {"producer": f"llmcompressor {llmcompressor.__version__}", "recipe": (
            f"GPTQModifier (dampening {a.dampening})" if a.method == "gptq" else "QuantizationModifier (RTN)")
            + f" int4 sym group {a.group} weights only, ignore lm_head + router", "samples": a.samples,
            "seq": a.seq, "skip": a.skip, "text": str(a.text), "seconds": round(took, 1),
            "expert_tensors_renamed": renamed}
    (a.out / "calibration.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
