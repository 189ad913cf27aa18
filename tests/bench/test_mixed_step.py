"""bench/mixed_step.py on the tiny engine (short prompts): every configuration let the newcomer in, in the number
of calls its chunk size implies, the ragged runs through the Scheduler's mixed steps (on our RaggedAttention where
the library is built), and the figures are the ones the names say."""

from __future__ import annotations

from mixtral_trt.bench.mixed_step import call_costs, canonical_runner, has_op, join_compare
from mixtral_trt.common.contract import ATTENTION_VISIBLE


def test_the_figures_measure_what_they_say(tiny_engine, tiny_ragged_engine, tmp_path):
    assert ATTENTION_VISIBLE in tiny_ragged_engine.runner.input_names
    # where the engine runs our kernels, the --ragged build's attention is the op, and the canonical graph is beside it
    assert has_op(tiny_ragged_engine) == ("cpu_kernels" in tiny_engine.manifest.backend_info)
    canonical = canonical_runner(tiny_engine, tmp_path) if has_op(tiny_ragged_engine) else None
    costs = call_costs(tiny_engine, tiny_ragged_engine, past=64, chunks=(4, 16), rows=2, row_past=8, repeats=1,
                       canonical=canonical)
    assert [c["chunk"] for c in costs["chunks"]] == [4, 16] and costs["steady_step_ms"] > 0
    assert costs["ragged_steady_over_steady"] == costs["ragged_steady_ms"] / costs["steady_step_ms"] > 0
    for c in costs["chunks"]:
        assert c["separate_ms"] == costs["steady_step_ms"] + c["chunk_call_ms"]
        assert c["ragged_over_steady"] == c["ragged_ms"] / costs["steady_step_ms"] > 0
        if canonical is not None:
            assert c["canonical_over_steady"] == c["canonical_ms"] / costs["steady_step_ms"] > 0
        else:
            assert "canonical_ms" not in c
    rows = join_compare(tiny_engine, tiny_ragged_engine, chunks=(16,), today=(16,), rows=2, long=80, repeats=1)
    assert [(r["mode"], r["chunk"]) for r in rows] == [("today", 16), ("mixed", 16)]
    for r in rows:
        assert 0 < r["gap_p50_ms"] <= r["gap_p99_ms"] <= r["gap_max_ms"] and r["newcomer_ttft_s"] > 0
        assert r["load"] >= 0
    # the Scheduler counts the rows' own 17-token prompts' chunks too (2 each), then 80 prompt tokens in 16s
    assert rows[0]["chunks"] == rows[1]["chunks"] == 5 + 2 * 2
