"""`load_model` on HF `save_pretrained` output gives HF transformers' logits (fp32, eager attention).

Tolerance: relative error (max |ours - HF| / max |HF|) below 1e-5 in fp32.
"""

from __future__ import annotations

import pytest
import torch

from mixtral_trt.mixtral_ref import load_model

FP32_TOL = 1e-5

CASES = {
    # odd sizes everywhere, MQA (one kv head), top-1 of 4 experts
    "odd-top1-e4": dict(
        vocab_size=211,
        hidden_size=36,
        intermediate_size=50,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=10,
        num_local_experts=4,
        num_experts_per_tok=1,
    ),
    # top-3 of 6 experts, sliding window shorter than the sequence, 3 layers
    "e6-top3-window": dict(
        num_local_experts=6, num_experts_per_tok=3, sliding_window=5, num_hidden_layers=3, rope_theta=1e6
    ),
    # 8 experts top-2, tied embeddings, plain multi-head attention, head_dim * heads != hidden
    "e8-top2-tied": dict(
        num_local_experts=8,
        num_experts_per_tok=2,
        tie_word_embeddings=True,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=6,
    ),
    # sharded checkpoint (model.safetensors.index.json + several files)
    "sharded": dict(
        num_local_experts=8,
        num_experts_per_tok=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=6,
        _shard_kb=40,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_hf(name, hf_checkpoint, rel_err):
    overrides = dict(CASES[name])
    shard_kb = overrides.pop("_shard_kb", None)
    ckpt = hf_checkpoint(seed=len(name), shard_kb=shard_kb, **overrides)
    if shard_kb:
        assert len(list(ckpt.path.glob("model-*.safetensors"))) > 2
    model = load_model(ckpt.path)
    ids = torch.randint(0, model.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ckpt.model(ids).logits
        got = model(ids)
    err = rel_err(got, expected)
    print(f"{name}: relative error vs HF {err:.2e}")
    assert got.shape == expected.shape
    assert err < FP32_TOL, f"{name}: relative error vs HF {err:.2e} >= {FP32_TOL:g}"


def test_model_is_eval_fp32_on_cpu(hf_checkpoint):
    model = load_model(hf_checkpoint().path)
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_dtype_cast(hf_checkpoint):
    ckpt = hf_checkpoint()
    model = load_model(ckpt.path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ref = load_model(ckpt.path)
    for (name, p), q in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(p, q.to(torch.bfloat16)), name


def test_sliding_window_is_exercised(hf_checkpoint, rel_err):
    """The window case above would fail if the window were ignored: without it the logits move."""
    from mixtral_trt.mixtral_ref import Mixtral
    from mixtral_trt.mixtral_ref.checkpoint import load_state_dict

    ckpt = hf_checkpoint(sliding_window=5)
    windowed = load_model(ckpt.path)
    full = Mixtral(windowed.config.replace(sliding_window=None)).eval()
    full.load_state_dict(load_state_dict(ckpt.path))
    ids = torch.randint(0, windowed.config.vocab_size, (1, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        err = rel_err(full(ids), ckpt.model(ids).logits)
        assert rel_err(windowed(ids), ckpt.model(ids).logits) < FP32_TOL
    assert err > 1e-3, f"ignoring the window changes the logits by only {err:.2e}"
