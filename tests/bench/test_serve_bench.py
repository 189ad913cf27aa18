"""`mixtral-export serve-bench` on the tiny preset with short runs: a real server subprocess, the JSON
figures consistent with the requests sent (every request generates exactly --max-tokens), the PNG."""

from __future__ import annotations

import json
from pathlib import Path


def test_serve_bench_tiny(cli, tmp_path):
    out = tmp_path / "serve.json"
    result = cli("serve-bench", "--preset", "tiny", "--clients", "1,3", "--rounds", "2", "--max-tokens", "5",
                 "--repeats", "2", "--max-seq", "128", "--json", out, "--workdir", tmp_path / "work")
    assert result.code == 0, result.out + result.err
    r = json.loads(out.read_text())
    assert set(r["best"]) == set(r["runs"]) == {"1", "3"} and all(len(v) == 2 for v in r["runs"].values())
    for n, best in r["best"].items():
        assert best["requests"] == int(n) * 2 and best["tokens"] == int(n) * 2 * 5, best
        assert abs(best["tokens_per_s"] - best["tokens"] / best["seconds"]) < 1e-6
        assert 0 < best["ttft_s"]["p50"] <= best["latency_s"]["p50"] <= best["latency_s"]["p99"]
        assert best["tokens_per_s"] == max(run["tokens_per_s"] for run in r["runs"][n])
    assert r["speedup"]["1"] == 1.0 and r["engine_alone_tokens_per_s"]["3"] > 0
    assert "targets" not in r  # the 8-client target is judged only when 1 and 8 clients were measured
    assert (tmp_path / "serve.png").read_bytes()[:4] == b"\x89PNG"


def test_serve_bench_rejects_bad_clients(cli, tmp_path):
    result = cli("serve-bench", "--clients", "1,x", "--workdir", tmp_path)
    assert result.code == 2 and "--clients" in result.err


def test_serve_bench_quantized_engine(cli, tmp_path):
    out = tmp_path / "serve.json"
    result = cli("serve-bench", "--preset", "tiny", "--quantize", "int8", "--clients", "2", "--rounds", "1",
                 "--max-tokens", "4", "--repeats", "1", "--max-seq", "64", "--json", out, "--workdir", tmp_path / "w")
    assert result.code == 0, result.out + result.err
    r = json.loads(out.read_text())
    assert r["settings"]["quantize"] == "int8" and r["best"]["2"]["tokens"] == 2 * 4, r["best"]
    manifest = json.loads((Path(r["engine_dir"]) / "manifest.json").read_text())
    assert manifest["backend_info"]["int8_activations_block"] == 32, manifest["backend_info"]  # QMoE's int8 kernels


def test_serve_bench_rejects_bad_quantize(cli, tmp_path):
    result = cli("serve-bench", "--quantize", "int3", "--workdir", tmp_path)
    assert result.code == 2 and "--quantize" in result.err and "Traceback" not in result.err


def test_serve_bench_multi_turn(cli, tmp_path):
    """The second turn through the server with the prefix cache on and off: both measured, the speedup their
    ratio (a benchmark figure, not asserted: the tiny preset's prompts cost little either way)."""
    out = tmp_path / "serve.json"
    result = cli("serve-bench", "--preset", "tiny", "--clients", "1", "--rounds", "1", "--max-tokens", "4",
                 "--repeats", "1", "--max-seq", "256", "--multi-turn", "160", "--json", out,
                 "--workdir", tmp_path / "w")
    assert result.code == 0, result.out + result.err
    m = json.loads(out.read_text())["multi_turn"]
    assert m["prefix_tokens"] == 160 and m["repeats"] == 1
    for name in ("without_cache", "with_cache"):
        assert 0 < m[name]["second_turn_ttft_s"] == m[name]["second_turn_ttft_median_s"]
    assert m["second_turn_speedup"] == m["without_cache"]["second_turn_ttft_s"] / m["with_cache"]["second_turn_ttft_s"]
    assert "second-turn TTFT" in result.out
    refused = cli("serve-bench", "--multi-turn", "500", "--max-seq", "512", "--workdir", tmp_path)
    assert refused.code == 2 and "--multi-turn 500" in refused.err and "Traceback" not in refused.err
