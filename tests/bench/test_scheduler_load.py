"""bench/scheduler_load.py on the tiny engine (short prompts): the figures it reports are the ones it claims
— the second turn's prefix came from the cache, every chunk size let the newcomer in, the running rows' gaps
were measured over the join."""

from __future__ import annotations

from mixtral_trt.bench.scheduler_load import join_latency, second_turn_ttft


def test_the_figures_measure_what_they_say(tiny_engine):
    turn = second_turn_ttft(tiny_engine, prefix=96, question=8, reply=4, repeats=1)
    assert turn["cached_tokens"] == 96 and turn["second_turn_tokens"] == 96 + 4 + 8
    assert turn["with_cache_s"] > 0 and turn["without_cache_s"] > 0
    rows = join_latency(tiny_engine, chunks=(None, 16), rows=2, long=80)
    assert [r["prefill_chunk"] for r in rows] == [None, 16]
    for r in rows:
        assert 0 < r["gap_p50_ms"] <= r["gap_p99_ms"] <= r["gap_max_ms"] and r["newcomer_ttft_s"] > 0
