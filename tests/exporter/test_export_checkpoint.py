"""`export` from checkpoints: every layout, HF-written checkpoints against HF's logits (the acceptance
check), dtype conversion while streaming, and broken checkpoints through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref import get_preset, load_model
from mixtral_trt.mixtral_ref.writer import init_random, save_checkpoint

LAYOUT_CFG = get_preset("tiny").replace(vocab_size=300, num_experts=6, top_k=3, sliding_window=6)


def engine_from(checkpoint, tmp_path, dtype="fp32", backend="ort"):
    onnx_dir = export_checkpoint(checkpoint, tmp_path / f"onnx-{dtype}", dtype=dtype, max_seq=64, max_batch=2)
    return runtime.load(build_engine(onnx_dir, tmp_path / f"engine-{dtype}-{backend}", backend))


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize(("layout", "shards"), [("hub", 1), ("hub", 3), ("fused", 1), ("consolidated", 2)])
def test_every_layout_exports_to_the_same_model(layout, shards, tmp_path):
    model = init_random(LAYOUT_CFG, seed=3, std=0.08)
    ckpt = save_checkpoint(model, LAYOUT_CFG, tmp_path / "ckpt", layout=layout, shards=shards)
    eng = engine_from(ckpt, tmp_path)
    ids = np.random.default_rng(0).integers(0, LAYOUT_CFG.vocab_size, (2, 15))
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).numpy()
    err = rel(eng.logits(ids), ref)
    assert err < 1e-5, f"{layout} x{shards}: logits relative error {err:.2e}"


HF_CONFIGS = {  # none of these sizes appear elsewhere in the tests
    "top3-of-6-sliding": dict(hidden_size=36, head_dim=10, num_attention_heads=6, num_key_value_heads=3,
                              intermediate_size=44, num_local_experts=6, num_experts_per_tok=3, sliding_window=7),
    "top2-of-8-tied": dict(hidden_size=48, head_dim=8, num_local_experts=8, num_experts_per_tok=2,
                           tie_word_embeddings=True, num_hidden_layers=3),
    "top1-of-5-sharded": dict(num_local_experts=5, num_experts_per_tok=1, intermediate_size=30),
}


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_hf_checkpoint_export_matches_hf_logits(name, hf_checkpoint, tmp_path):
    """Acceptance: save_pretrained -> export -> build --backend ort -> Engine.logits vs HF, rel < 1e-4."""
    ckpt = hf_checkpoint(seed=11, shard_kb=200 if "sharded" in name else None, **HF_CONFIGS[name])
    eng = engine_from(ckpt.path, tmp_path)
    ids = np.random.default_rng(1).integers(0, 131, (2, 21))
    with torch.no_grad():
        ref = ckpt.model(torch.from_numpy(ids)).logits.numpy()
    err = rel(eng.logits(ids), ref)
    assert err < 1e-4, f"{name}: engine vs HF logits relative error {err:.2e}"


def test_dtype_conversion_while_streaming(tmp_path):
    """A bf16 checkpoint exported as fp32 and as fp16: same numbers as the bf16 weights cast in memory."""
    model = init_random(LAYOUT_CFG, seed=5, std=0.08, dtype=torch.bfloat16)
    ckpt = save_checkpoint(model, LAYOUT_CFG, tmp_path / "ckpt", layout="consolidated")
    ref_model = load_model(ckpt, dtype=torch.float32)
    ids = np.random.default_rng(2).integers(0, LAYOUT_CFG.vocab_size, (1, 12))
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).numpy()
    err32 = rel(engine_from(ckpt, tmp_path, "fp32").logits(ids), ref)
    err16 = rel(engine_from(ckpt, tmp_path, "fp16").logits(ids), ref)
    assert err32 < 1e-5, f"bf16 checkpoint -> fp32 export: relative error {err32:.2e}"
    assert err16 < 1e-2, f"bf16 checkpoint -> fp16 export: relative error {err16:.2e}"


def test_broken_checkpoint_export_exits_2_and_leaves_nothing(broken_checkpoint, cli, tmp_path):
    case, path, expected = broken_checkpoint
    out = tmp_path / "out"
    result = cli("export", path, out)
    assert result.code == 2, f"{case}: exit {result.code}\n{result.err}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {result.err!r}"
    assert all(part in lines[0] for part in expected), f"{case}: {lines[0]!r} lacks {expected}"
    assert "Traceback" not in result.err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
