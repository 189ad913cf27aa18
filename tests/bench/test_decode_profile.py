"""`mixtral-export profile`: ORT's profiler splits a decode step into buckets that account for its kernels."""

from __future__ import annotations

import json

import pytest

from mixtral_trt.bench.decode_profile import BUCKETS, bucket_of
from support.engines import engine, tiny_checkpoint


def test_bucket_of():
    assert bucket_of("QMoE", "y", True) == "moe" and bucket_of("MatMulNBits", "logits", True) == "lm_head"
    assert bucket_of("MatMul", "q", True) == "attn_proj" and bucket_of("MatMul", "scores", False) == "attn_core"
    assert bucket_of("Concat", "present.3.key", False) == "kv_concat" and bucket_of("Concat", "shape", False) == "glue"
    assert bucket_of("SimplifiedLayerNormalization", "n", False) == "norm" and bucket_of("Gemm", "r", True) == "router"
    assert bucket_of("MatMul", "h", True, "node_moe_experts.moe.expert3.fc1") == "moe"  # ort_experts.py
    assert bucket_of("NonZero", "i", False, "node_moe_experts_1.moe.17") == "moe"


@pytest.fixture(scope="module")
def ort_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    return engine(tiny_checkpoint(root), root, "ort")


def test_profile_a_tiny_decode(cli, ort_engine, tmp_path):
    out = tmp_path / "profile.json"
    result = cli("profile", ort_engine, "--steps", "4", "--context", "8", "--threads", "1", "--json", out)
    assert result.code == 0, result.out + result.err
    r = json.loads(out.read_text())
    assert r["runs"] == 4 and set(r["buckets_ms"]) == set(BUCKETS)
    assert r["buckets_ms"]["moe"] > 0 and r["buckets_ms"]["lm_head"] > 0 and r["buckets_ms"]["kv_concat"] > 0
    assert sum(r["buckets_ms"].values()) == pytest.approx(r["kernels_ms"], rel=1e-6)
    assert r["kernels_ms"] + r["outside_kernels_ms"] == pytest.approx(r["step_ms"], rel=1e-6)
    assert "moe" in result.out
