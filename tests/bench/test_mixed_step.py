"""bench/mixed_step.py on the tiny engine (short prompts): every configuration let the newcomer in, in the number
of calls its chunk size implies, and the figures are the ones the names say."""

from __future__ import annotations

from mixtral_trt.bench.mixed_step import call_costs, join_compare, op_runner, ragged_runner
from mixtral_trt.common.contract import ATTENTION_VISIBLE


def test_the_figures_measure_what_they_say(tiny_engine, tiny_ckpt, tmp_path):
    runner = ragged_runner(tiny_engine, tmp_path)  # the engine's graph beside it, weights linked (write_ragged)
    assert ATTENTION_VISIBLE in runner.input_names
    costs = call_costs(tiny_engine, runner, past=64, chunks=(4, 16), rows=2, row_past=8, repeats=1)
    assert [c["chunk"] for c in costs["chunks"]] == [4, 16] and costs["steady_step_ms"] > 0
    for c in costs["chunks"]:
        assert c["separate_ms"] == costs["steady_step_ms"] + c["chunk_call_ms"]
        assert c["ragged_over_steady"] == c["ragged_ms"] / costs["steady_step_ms"] > 0
    op = op_runner(tiny_engine, tiny_engine.path.parent / f"onnx-{tiny_ckpt.name}-fp32", tmp_path)  # support/engines
    if op is not None:  # the same calls on our kernels' RaggedAttention, interleaved
        costs = call_costs(tiny_engine, runner, past=64, chunks=(4,), rows=2, row_past=8, repeats=1, op_runner=op)
        assert costs["chunks"][0]["op_over_steady"] == costs["chunks"][0]["op_ms"] / costs["steady_step_ms"] > 0
    rows = join_compare(tiny_engine, runner, chunks=(16,), today=(16,), rows=2, long=80, repeats=1, op_runner=op)
    modes = [("scheduler", 16), ("ragged", 16)] + ([("ragged-op", 16)] if op is not None else [])
    assert [(r["mode"], r["chunk"]) for r in rows] == modes
    for r in rows:
        assert 0 < r["gap_p50_ms"] <= r["gap_p99_ms"] <= r["gap_max_ms"] and r["newcomer_ttft_s"] > 0
    assert all(r["chunks"] == 5 for r in rows[1:])  # 80 prompt tokens in calls of 16
    assert rows[0]["chunks"] == 5 + 2 * 2  # the Scheduler counts the rows' own 17-token prompts' chunks too
