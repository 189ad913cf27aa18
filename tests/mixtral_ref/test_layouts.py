"""The hub, fused (transformers 5) and consolidated (mistral-inference) layouts load to the same model.

The consolidated layout stores wq / wk rows in the interleaved (complex) RoPE order; an independent
few-line mistral-inference-style forward (complex RoPE on the stored weights) proves the permutation.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mixtral_trt.mixtral_ref import get_preset, load_model
from mixtral_trt.mixtral_ref.checkpoint import inspect_checkpoint, load_state_dict
from mixtral_trt.mixtral_ref.writer import init_random, save_checkpoint

FP32_TOL = 1e-5
CFG = get_preset("tiny").replace(
    vocab_size=300, num_heads=6, num_kv_heads=2, head_dim=10, num_experts=5, top_k=2
)


@pytest.fixture(scope="module")
def model():
    m = init_random(CFG, seed=7, std=0.1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return m


@pytest.mark.parametrize(
    ("layout", "shards"),
    [("hub", 1), ("hub", 3), ("fused", 1), ("fused", 2), ("consolidated", 1), ("consolidated", 4)],
)
def test_roundtrip_is_exact(model, layout, shards, tmp_path):
    path = save_checkpoint(model, CFG, tmp_path / "ckpt", layout=layout, shards=shards)
    info = inspect_checkpoint(path)
    assert (info.layout, len(info.files)) == (layout, shards)
    state = load_state_dict(path)
    assert state.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), f"{layout}: {name} differs after save/load"


def test_hub_and_fused_from_transformers_agree(hf_model, tmp_path):
    """HF's in-memory state dict is the fused layout; its save_pretrained output is the hub layout."""
    from safetensors.torch import save_file

    hf = hf_model(seed=3, num_local_experts=6, num_experts_per_tok=3)
    hf.save_pretrained(tmp_path / "hub")
    (tmp_path / "fused").mkdir()
    save_file(
        {k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "fused/model.safetensors")
    )
    (tmp_path / "fused/config.json").write_text((tmp_path / "hub/config.json").read_text())
    assert inspect_checkpoint(tmp_path / "hub").layout == "hub"
    assert inspect_checkpoint(tmp_path / "fused").layout == "fused"
    hub, fused = load_state_dict(tmp_path / "hub"), load_state_dict(tmp_path / "fused")
    for name in hub:
        assert torch.equal(hub[name], fused[name]), name


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mistral_forward(sd: dict[str, torch.Tensor], params: dict, ids: torch.Tensor) -> torch.Tensor:
    """mistral-inference's math (interleaved complex RoPE) on consolidated weights. ids [T] -> [T, V]."""
    t, n, g, d, eps = (
        len(ids),
        params["n_heads"],
        params["n_kv_heads"],
        params["head_dim"],
        params["norm_eps"],
    )
    freqs = 1.0 / params["rope_theta"] ** (torch.arange(0, d, 2).double() / d)
    cis = torch.polar(torch.ones(t, d // 2, dtype=torch.double), torch.outer(torch.arange(t).double(), freqs))

    def rope(x):  # [T, heads, D], pairs (2j, 2j+1) rotated as complex numbers
        return torch.view_as_real(torch.view_as_complex(x.reshape(t, -1, d // 2, 2)) * cis[:, None]).flatten(
            -2
        )

    sd = {k: v.double() for k, v in sd.items()}
    h = sd["tok_embeddings.weight"][ids]
    causal = torch.full((t, t), float("-inf"), dtype=torch.double).triu(1)
    for i in range(params["n_layers"]):
        w = {k.removeprefix(f"layers.{i}."): v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        x = _rms(h, w["attention_norm.weight"], eps)
        q = rope((x @ w["attention.wq.weight"].T).view(t, n, d))
        k = rope((x @ w["attention.wk.weight"].T).view(t, g, d)).repeat_interleave(n // g, dim=1)
        v = (x @ w["attention.wv.weight"].T).view(t, g, d).repeat_interleave(n // g, dim=1)
        probs = torch.softmax(torch.einsum("thd,shd->hts", q, k) * d**-0.5 + causal, dim=-1)
        h = h + torch.einsum("hts,shd->thd", probs, v).reshape(t, n * d) @ w["attention.wo.weight"].T
        x = _rms(h, w["ffn_norm.weight"], eps)
        top, chosen = torch.topk(x @ w["feed_forward.gate.weight"].T, params["moe"]["num_experts_per_tok"])
        weights = torch.softmax(top, dim=-1)
        y = torch.zeros_like(x)
        for e in range(params["moe"]["num_experts"]):
            rows, slot = torch.where(chosen == e)
            ex = {m: w[f"feed_forward.experts.{e}.{m}.weight"] for m in ("w1", "w2", "w3")}
            act = F.silu(x[rows] @ ex["w1"].T) * (x[rows] @ ex["w3"].T)
            y[rows] += weights[rows, slot, None] * (act @ ex["w2"].T)
        h = h + y
    return _rms(h, sd["norm.weight"], eps) @ sd["output.weight"].T


def test_consolidated_matches_interleaved_rope_oracle(model, tmp_path, rel_err):
    from safetensors.torch import load_file

    path = save_checkpoint(model, CFG, tmp_path / "mistral", layout="consolidated")
    stored = load_file(str(path / "consolidated.safetensors"))
    params = json.loads((path / "params.json").read_text())
    assert "layers.0.attention.wq.weight" in stored and "layers.0.feed_forward.experts.4.w2.weight" in stored
    ids = torch.randint(0, CFG.vocab_size, (12,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(ids[None])[0]
        oracle = mistral_forward(stored, params, ids)
        loaded = load_model(path)(ids[None])[0]
    err_oracle, err_loaded = rel_err(oracle, expected), rel_err(loaded, oracle)
    print(f"mistral oracle vs reference {err_oracle:.2e}; consolidated load_model vs oracle {err_loaded:.2e}")
    assert err_oracle < FP32_TOL, f"interleaved-RoPE oracle vs reference: {err_oracle:.2e}"
    assert err_loaded < FP32_TOL, f"load_model(consolidated) vs oracle: {err_loaded:.2e}"
    # without the row permutation the oracle disagrees: the test can fail
    unpermuted = dict(stored)
    for key in stored:
        if key.endswith(("attention.wq.weight", "attention.wk.weight")):
            unpermuted[key] = model.state_dict()[key.replace("attention.w", "attn.w")]
    assert rel_err(mistral_forward(unpermuted, params, ids), expected) > 1e-3


@pytest.mark.parametrize("layout", ["hub", "fused", "consolidated"])
def test_tied_embeddings_roundtrip(layout, tmp_path):
    cfg = CFG.replace(tie_word_embeddings=True)
    tied = init_random(cfg, seed=2)
    path = save_checkpoint(tied, cfg, tmp_path / "ckpt", layout=layout)
    model = load_model(path)
    assert model.config.tie_word_embeddings and model.lm_head is None
    for name, tensor in tied.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
