"""Calibrated GPTQ / AWQ int4 and FP8 checkpoints of a float one with llm-compressor, to compare against our
round-to-nearest int4 / int8.

llmcompressor cannot be installed under the lock (0.14 pins transformers <= 5.17 and pyyaml <= 6.0.3, and
compressed-tensors 0.19.0 where the lock has 0.20.1), so this runs in a throwaway venv outside the repository,
layered over the project's venv, with llmcompressor installed --no-deps (docs/BENCHMARKS.md, "Calibrated GPTQ
against round-to-nearest", has the commands). Nothing in the package imports this module.

    python -m mixtral_trt.bench.gptq_calibrate CKPT OUT [--text docs/eval_text.txt] [--skip 2048]
        [--samples 16] [--seq 256] [--group 128] [--method gptq|rtn|awq|fp8-dynamic|fp8] [--asym]
        [--actorder static|group|weight] [--n-grid 20]

Calibration samples: `samples` windows of `seq` tokens taken from the text after its first `skip` tokens (so the
first 2048 tokens, which `mixtral-export eval --max-tokens 2048` scores, are never calibrated on). Recipe:
GPTQModifier on every Linear, W4A16-style weights (int4, symmetric unless `--asym`, group `group`, `--actorder`
llmcompressor's default static or group (g_idx saved as weight_g_idx), no activation quantization), the router
and the LM head left float; saved compressed (compressed-tensors pack-quantized). The other methods, same ignore
list: `rtn` the same scheme by QuantizationModifier (round-to-nearest, no calibration data), the control in the
same format; `awq` AWQModifier (activation-aware smoothing, Mixtral's mappings below: the router is balanced with
the experts' gate / up projections, so routing sees the same logits) then QuantizationModifier, int4 asymmetric
group `group` (W4A16_ASYM's weights); `fp8-dynamic` / `fp8` QuantizationModifier with the presets FP8_DYNAMIC
(e4m3 weights, one scale per output channel; activations dynamic per token) and FP8 (one scale per tensor;
activations static per tensor, observed on the calibration data), saved float-quantized (our reader records the
input_activations and keeps activations float).
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


# Mixtral's AWQ mappings (llmcompressor has none for MixtralForCausalLM and would fall back to dense defaults that
# smooth the MLP's norm without compensating the router)
AWQ_MAPPINGS = (("re:.*input_layernorm$", ("re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$")),
                ("re:.*v_proj$", ("re:.*o_proj$",)),
                ("re:.*post_attention_layernorm$", ("re:.*mlp.gate$", "re:.*experts.*.gate_proj$",
                                                    "re:.*experts.*.up_proj$")),
                ("re:.*up_proj$", ("re:.*down_proj$",)))
IGNORE = ["lm_head", "re:.*block_sparse_moe.gate$", "re:.*mlp.gate$"]
CALIBRATED = ("gptq", "awq", "fp8")  # methods that run calibration data through the model


def cpu_workarounds() -> list[str]:
    """Patches llmcompressor 0.14 needs to run AWQ on a CPU-only torch (returns what was patched). AWQModifier pins
    its cached activations before each mapping's grid search (a host-to-device transfer speed-up), and pinning
    without an accelerator fails: "RuntimeError: Cannot access accelerator device when none is available"
    (llmcompressor/pipelines/cache.py, IntermediatesCache.pin_memory). Without an accelerator there is no transfer
    to speed up, so pinning becomes a no-op; nothing else changes."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        return []
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
    return ["IntermediatesCache.pin_memory: no-op (no accelerator)"]


def recipe(method: str, group: int, asym: bool, actorder: str, dampening: float, n_grid: int = 20
           ) -> tuple[list, str]:
    """(llmcompressor modifiers, a one-line description) of `method` (imports llmcompressor)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if method.startswith("fp8"):
        preset = "FP8_DYNAMIC" if method == "fp8-dynamic" else "FP8"
        return [QuantizationModifier(targets=["Linear"], scheme=preset, ignore=IGNORE)], f"{preset} preset"
    sym = not asym and method != "awq"
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=4, type="int", symmetric=sym, strategy="group", group_size=group))
    what = f"int4 {'sym' if sym else 'asym'} group {group} weights only"
    quant = QuantizationModifier(config_groups={"group_0": scheme}, ignore=IGNORE)
    if method == "gptq":
        return ([GPTQModifier(config_groups={"group_0": scheme}, ignore=IGNORE, dampening_frac=dampening,
                              actorder=actorder)], f"GPTQModifier (dampening {dampening}, actorder {actorder}) {what}")
    if method == "awq":
        from llmcompressor.modifiers.transform.awq import AWQMapping, AWQModifier

        mappings = [AWQMapping(smooth, list(balance)) for smooth, balance in AWQ_MAPPINGS]
        return ([AWQModifier(mappings=mappings, n_grid=n_grid), quant],
                f"AWQModifier (n_grid {n_grid}) + QuantizationModifier {what}")
    return [quant], f"QuantizationModifier (RTN) {what}"


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
    ap.add_argument("--method", choices=("gptq", "rtn", "awq", "fp8-dynamic", "fp8"), default="gptq",
                    help="rtn: llmcompressor's QuantizationModifier, the same scheme rounded to nearest (control)")
    ap.add_argument("--asym", action="store_true", help="asymmetric int4 (gptq / rtn; awq always is)")
    ap.add_argument("--actorder", choices=("static", "group", "weight"), default="static", help="gptq only")
    ap.add_argument("--n-grid", type=int, default=20, help="awq only: scales tried per mapping (llmcompressor's 20)")
    a = ap.parse_args(argv)

    import llmcompressor
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.ckpt)
    ids = tok(a.text.read_text())["input_ids"]
    if ids and ids[0] == tok.bos_token_id:
        ids = ids[1:]
    windows = calibration_windows(ids, a.skip, a.samples, a.seq, tok.bos_token_id)
    data = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})

    model = AutoModelForCausalLM.from_pretrained(a.ckpt, dtype=torch.float32)
    modifiers, what = recipe(a.method, a.group, a.asym, a.actorder, a.dampening, a.n_grid)
    patched = cpu_workarounds() if a.method == "awq" else []
    t0 = time.perf_counter()
    oneshot(model=model, dataset=data if a.method in CALIBRATED else None, recipe=modifiers,
            num_calibration_samples=len(windows), max_seq_length=a.seq, output_dir=None)
    took = time.perf_counter() - t0
    model.save_pretrained(a.out, save_compressed=True)
    tok.save_pretrained(a.out)
    shutil.copy(a.ckpt / "tokenizer.model", a.out / "tokenizer.model")  # save_pretrained writes tokenizer.json only
    renamed = rename_experts(a.out)
    info = {"producer": f"llmcompressor {llmcompressor.__version__}", "recipe": what + ", ignore lm_head + router",
            "samples": a.samples if a.method in CALIBRATED else 0,
            "seq": a.seq, "skip": a.skip, "text": str(a.text), "seconds": round(took, 1),
            "expert_tensors_renamed": renamed, "patched": patched}
    (a.out / "calibration.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
