"""The serve benchmark's PNG and gap figure when no request streamed two pieces of text (CI saw a KeyError:
a 4-token request whose tokens decoded to text only together gave no gaps)."""

from __future__ import annotations

from mixtral_trt.bench.serve_plot import gap_ms, save_serve_plot


def _run(gaps: dict[str, float]) -> dict:
    pct = {"p50": 0.5, "p90": 0.7, "p99": 0.8}
    return {"tokens_per_s": 10.0, "latency_s": pct, "ttft_s": pct, "token_gap_s": gaps}


def test_a_run_without_gaps_plots_and_reads_n_a(tmp_path):
    result = {"preset": "tiny", "settings": {"max_tokens": 4}, "engine_alone_tokens_per_s": {"1": 12.0, "2": 20.0},
              "best": {"1": _run({}), "2": _run({"p50": 0.0123, "p90": 0.02, "p99": 0.03})},
              "runs": {"1": [_run({})], "2": [_run({})]}}
    assert gap_ms(result["best"]["1"]) == "n/a"
    assert gap_ms(result["best"]["2"], digits=1) == "12.3"
    path = save_serve_plot(result, tmp_path / "serve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
