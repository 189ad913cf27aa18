"""`mixtral-export bench` on the tiny preset with short runs: the JSON schema, the PNG, figures that make
sense (positive, roofline from the measured bandwidth), and skipped backends reported with a reason."""

from __future__ import annotations

import json

from mixtral_trt.bench.roofline import kv_cache_bytes
from mixtral_trt.bench.run import _ours_for_peer
from mixtral_trt.bench.system import active_weight_bytes
from mixtral_trt.mixtral_ref import get_preset


def test_bench_tiny(cli, tmp_path):
    out = tmp_path / "bench.json"
    result = cli("bench", "--preset", "tiny", "--backends", "ort,ort-gqa,portable,trt", "--json", out,
                 "--workdir", tmp_path / "work", "--context", "8", "--new-tokens", "4", "--prefill-tokens", "16",
                 "--quantize", "int8")
    assert result.code == 0, result.out + result.err
    r = json.loads(out.read_text())
    for key in ("ort", "ort-gqa", "portable", "torch_ref", "hf_transformers"):
        assert r["decode"][key] > 0 and r["prefill"][key] > 0, key
    assert r["token_counts"]["ort"] == {"new_tokens": 4, "prefill_tokens": 16}
    assert "trt" in r["skipped"]  # no TensorRT / GPU here: reported, not silently dropped
    assert set(r["quantized"]) == {"ort int8", "ort-gqa int8"}  # quantized engines on each ONNX Runtime backend
    q = r["quantized"]["ort int8"]
    assert q["decode_tok_s"] > 0 and q["engine_bytes"] > 0 and q["decode_roofline_tok_s"] > r["decode_roofline_tok_s"]
    assert r["moe_layer"]["sparse_ms"] > 0 and r["moe_layer"]["dense_ms"] > 0
    assert set(r["moe_layer"]["by_tokens"]) == {"1", "512"}
    assert r["memory_bandwidth_gbs"] > 0.5
    cfg = get_preset("tiny")
    kv = kv_cache_bytes(cfg, 8 + 4 / 2)  # the KV cache at the mean context of the timed steps, fp32
    assert r["kv_cache_bytes_per_step"] == kv and r["active_weight_bytes_per_token"] == active_weight_bytes(cfg, 4)
    roofline = r["memory_bandwidth_gbs"] * 1e9 / (active_weight_bytes(cfg, 4) + kv)
    assert abs(r["decode_roofline_tok_s"] - roofline) < 1e-6 * roofline
    assert {"ort_over_hf_decode", "ort_fraction_of_roofline", "moe_sparse_le_035_dense"} <= set(r["targets"])
    c = r["constrained"]  # the grammar's cost per token beside the decode step (ratio not asserted: tiny model)
    assert c["tokens"] == 4 and c["mask_ms_mean"] > 0 and c["decode_step_ms_mean"] > 0 and c["compile_ms"] > 0
    assert abs(c["mask_over_decode"] - c["mask_ms_mean"] / c["decode_step_ms_mean"]) < 1e-9
    assert "constrained_mask_le_10pct_decode" in r["targets"]
    assert r["peak_rss_bytes"] > 100 << 20
    # the roofline: two bandwidth measurements of three methods each; every decode checked against it
    assert len(r["bandwidth"]["measurements"]) == 2 and r["roofline"]["roofline_gbs"] >= r["bandwidth"]["best_gbs"]
    assert set(r["roofline"]["decodes"]) == {"ort", "ort-gqa", "portable", "torch_ref", "hf_transformers", "ort int8",
                                             "ort-gqa int8"}
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


def test_the_peer_is_compared_with_our_best_onnx_runtime_backend():
    decode, prefill = {"ort": 100.0, "ort-gqa": 110.0, "torch_ref": 500.0}, {"ort": 2000.0, "ort-gqa": 1900.0}
    quantized = {"ort int8": {"decode_tok_s": 300.0, "prefill_tok_s": 900.0},
                 "ort-gqa int8": {"decode_tok_s": 280.0, "prefill_tok_s": 950.0},
                 "ort-gqa int4": {"decode_tok_s": 450.0, "prefill_tok_s": 800.0}}
    ours, backend = _ours_for_peer(decode, prefill, quantized)
    assert ours == {"fp32 decode": 110.0, "fp32 prefill": 2000.0, "int8 decode": 300.0, "int8 prefill": 950.0,
                    "int4 decode": 450.0, "int4 prefill": 800.0}
    assert backend == {"fp32 decode": "ort-gqa", "fp32 prefill": "ort", "int8 decode": "ort",
                       "int8 prefill": "ort-gqa", "int4 decode": "ort-gqa", "int4 prefill": "ort-gqa"}
    # both expert forms measured (bench --experts matmul,moe): the best of every ONNX Runtime engine counts
    decode["ort-gqa (moe)"], prefill["ort-gqa (moe)"] = 120.0, 1800.0
    quantized["ort (moe) int8"] = {"decode_tok_s": 320.0, "prefill_tok_s": 100.0}
    ours, backend = _ours_for_peer(decode, prefill, quantized)
    assert ours["fp32 decode"] == 120.0 and ours["fp32 prefill"] == 2000.0 and ours["int8 decode"] == 320.0
    assert backend["fp32 decode"] == "ort-gqa (moe)" and backend["int8 decode"] == "ort (moe)"
    assert backend["int8 prefill"] == "ort-gqa"
    # the bf16-expert engine (our kernels) and the fp16 one are their own rows, never the fp32 row's candidates
    decode.update(ort_bf16=150.0, ort_fp16=90.0)
    prefill.update(ort_bf16=2500.0, ort_fp16=1000.0)
    ours, backend = _ours_for_peer(decode, prefill, quantized)
    assert ours["fp32 decode"] == 120.0 and ours["fp32 prefill"] == 2000.0
    assert (ours["bf16 decode"], ours["bf16 prefill"], ours["fp16 decode"]) == (150.0, 2500.0, 90.0)
    # bf16 measured on both ONNX Runtime backends: the best of each row, labelled with its backend
    decode["ort-gqa_bf16"], prefill["ort-gqa_bf16"] = 170.0, 2400.0
    ours, backend = _ours_for_peer(decode, prefill, quantized)
    assert (ours["bf16 decode"], backend["bf16 decode"]) == (170.0, "ort-gqa")
    assert (ours["bf16 prefill"], backend["bf16 prefill"]) == (2500.0, "ort")
