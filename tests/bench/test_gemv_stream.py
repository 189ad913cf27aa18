"""bench/gemv_stream.py: our linear ops streaming one weight per format, with a small weight (the rates are not
checked, only that each format is timed over the bytes it names and its GEMV is right: the bench checks that)."""

from __future__ import annotations

import pytest

from mixtral_trt.bench.gemv_stream import BLOCK_ROWS, FORMATS, stream_rates
from support.cpu_kernels import library_or_skip


def test_each_format_is_timed_over_its_weight_bytes():
    library_or_skip()
    got = stream_rates(FORMATS, mb=0.1, k=64, rounds=1)
    rows = BLOCK_ROWS  # 0.1 MB of any format at K = 64 is at most one block of rows
    want = {"fp32": rows * 64 * 4, "bf16": rows * 64 * 2, "int8": rows * (64 + 2 * 4), "int4": rows * (32 + 2 * 4)}
    assert {f: got["gbs"][f]["bytes"] for f in FORMATS} == want, got
    assert all(v["best"] > 0 for v in got["gbs"].values()), got


def test_unknown_format_is_refused():
    from mixtral_trt.bench.gemv_stream import main

    with pytest.raises(SystemExit, match="--formats"):
        main(["--formats", "fp8"])
