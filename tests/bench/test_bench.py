"""`mixtral-export bench` on the tiny preset with short runs: the JSON schema, the PNG, figures that make
sense (positive, roofline from the measured bandwidth), and skipped backends reported with a reason."""

from __future__ import annotations

import json

from mixtral_trt.bench.system import active_weight_bytes, decode_roofline_tok_s
from mixtral_trt.mixtral_ref import get_preset


def test_bench_tiny(cli, tmp_path):
    out = tmp_path / "bench.json"
    result = cli("bench", "--preset", "tiny", "--backends", "ort,portable,trt", "--json", out,
                 "--workdir", tmp_path / "work", "--context", "8", "--new-tokens", "4", "--prefill-tokens", "16",
                 "--quantize", "int8")
    assert result.code == 0, result.out + result.err
    r = json.loads(out.read_text())
    for key in ("ort", "portable", "torch_ref", "hf_transformers"):
        assert r["decode"][key] > 0 and r["prefill"][key] > 0, key
    assert r["token_counts"]["ort"] == {"new_tokens": 4, "prefill_tokens": 16}
    assert "trt" in r["skipped"]  # no TensorRT / GPU here: reported, not silently dropped
    q = r["quantized"]["int8"]
    assert q["decode_tok_s"] > 0 and q["engine_bytes"] > 0 and q["decode_roofline_tok_s"] > r["decode_roofline_tok_s"]
    assert r["moe_layer"]["sparse_ms"] > 0 and r["moe_layer"]["dense_ms"] > 0
    assert set(r["moe_layer"]["by_tokens"]) == {"1", "512"}
    assert r["memory_bandwidth_gbs"] > 0.5
    cfg = get_preset("tiny")
    assert abs(r["decode_roofline_tok_s"] - decode_roofline_tok_s(r["memory_bandwidth_gbs"], cfg, 4)) < 1e-6
    assert {"ort_over_hf_decode", "ort_fraction_of_roofline", "moe_sparse_le_035_dense"} <= set(r["targets"])
    c = r["constrained"]  # the grammar's cost per token beside the decode step (ratio not asserted: tiny model)
    assert c["tokens"] == 4 and c["mask_ms_mean"] > 0 and c["decode_step_ms_mean"] > 0 and c["compile_ms"] > 0
    assert abs(c["mask_over_decode"] - c["mask_ms_mean"] / c["decode_step_ms_mean"]) < 1e-9
    assert "constrained_mask_le_10pct_decode" in r["targets"]
    assert r["peak_rss_bytes"] > 100 << 20
    # the roofline: two bandwidth measurements of three methods each; every decode checked against it
    assert len(r["bandwidth"]["measurements"]) == 2 and r["roofline"]["roofline_gbs"] >= r["bandwidth"]["best_gbs"]
    assert set(r["roofline"]["decodes"]) == {"ort", "portable", "torch_ref", "hf_transformers", "ort int8"}
    for name, d in r["roofline"]["decodes"].items():
        assert d["fraction"] <= 1 + 1e-9 or d["note"], (name, d)
    assert len(r["decode_runs"]["ort"]["tok_s"]) == 3 and r["decode"]["ort"] == max(r["decode_runs"]["ort"]["tok_s"])
    assert q["scheme"] == "int8-block32" and q["dense_quantized"] and q["int8_activations_block"] == 32
    assert r["peer"] is None and "no_unexplained_decode_above_roofline" in r["targets"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_active_weight_bytes_counts_top_k_experts_and_lm_head():
    cfg = get_preset("mixtral-8x7b")
    # Mixtral 8x7B: 12.9B active parameters, minus the 131M-parameter embedding table (one row is read)
    assert abs(active_weight_bytes(cfg, 2) / 2 - (12.88e9 - 32000 * 4096)) < 0.02e9
    tied = cfg.replace(tie_word_embeddings=True)
    assert active_weight_bytes(tied, 1) == tied.num_parameters(active=True)
