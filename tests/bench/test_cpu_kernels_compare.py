"""`bench.cpu_kernels.compare` (`mixtral-export bench-cpu-kernels`) on the `tiny` preset, one round: both engines
measured at batch 1, at a batch of different prompts and at prefill, with the speed-ups and the batch gain (tokens
per second at the batch over batch 1) computed from those samples."""

from __future__ import annotations

import pytest

from mixtral_trt.bench.cpu_kernels import compare
from support.cpu_kernels import library_or_skip


def test_compare_reports_speedups_and_the_batch_gain(tmp_path):
    library_or_skip()
    result = compare(tmp_path, "tiny", ("int4",), threads=1, rounds=1, context=8, steps=2, batch=3, prefill=16)
    row = result["results"]["int4"]
    assert set(row["speedup"]) == {"decode_b1", "decode_b3", "prefill"}
    for kernels in ("ours", "ort"):
        b1, b3 = row[kernels]["decode_b1"]["best_ms"], row[kernels]["decode_b3"]["best_ms"]
        assert b1 > 0 and b3 > 0
        assert row["batch_gain"][kernels]["best"] == pytest.approx(3 * b1 / b3)
    ours, ort = row["ours"]["prefill"]["median_ms"], row["ort"]["prefill"]["median_ms"]
    assert row["speedup"]["prefill"]["median"] == pytest.approx(ort / ours)
    assert result["settings"]["batch"] == 3
