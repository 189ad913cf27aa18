"""The roofline: bytes per decode step, the bandwidth measurement's shape, and the check that no decode is
reported above the roofline without a reason."""

from __future__ import annotations

import dataclasses

import pytest

from mixtral_trt.bench.bandwidth import METHODS, last_level_cache_bytes, measure_bandwidth
from mixtral_trt.bench.noise import Window
from mixtral_trt.bench.roofline import (
    StepBytes,
    check_roofline,
    kv_cache_bytes,
    quantized_step_bytes,
    step_bytes,
    weight_bytes,
)
from mixtral_trt.bench.system import active_weight_bytes
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref import get_preset


def test_step_bytes_count_every_weight_read_once():
    cfg = get_preset("mixtral-8x7b")
    assert step_bytes(cfg, 2, 2, small=2).total == active_weight_bytes(cfg, 2)  # 12.9B active minus the embedding
    small = get_preset("small")
    b = step_bytes(small)
    assert b.total == pytest.approx(278e6, rel=0.01)  # the 278 MB per fp32 step
    assert step_bytes(small, all_experts=True).experts == b.experts * small.num_experts / small.top_k
    q = quantized_step_bytes(small, QuantScheme(8, 32), dense=True)
    assert q.experts == pytest.approx(b.experts / 4 * (1 + 4 / 32))  # codes + one fp32 scale per 32
    assert quantized_step_bytes(small, QuantScheme(8, 32), dense=False).fixed == b.fixed
    assert weight_bytes(QuantScheme(4, 0), 1024) == pytest.approx(0.5 + 4 / 1024)


def test_kv_cache_bytes_per_step():
    """The past keys and values attention reads each step: at 4,096 tokens `small`'s fp32 cache (6 layers,
    4 kv heads of 64) is 50 MB, more than its int8 weights; 8x7B's fp16 cache 128 KiB per token
    (docs/TENSOR_PARALLEL.md)."""
    small = get_preset("small")
    assert kv_cache_bytes(small, 4096) == 2 * 6 * 4 * 64 * 4096 * 4 == pytest.approx(50.3e6, rel=1e-3)
    assert kv_cache_bytes(get_preset("mixtral-8x7b"), 1, 2) == 128 * 1024
    windowed = dataclasses.replace(small, sliding_window=1024)
    assert kv_cache_bytes(windowed, 4096) == kv_cache_bytes(small, 1024)
    assert StepBytes(1.0, 2.0, 3.0).total == 6.0 and StepBytes(1.0, 2.0).to_json()["cache"] == 0.0


def test_check_roofline_raises_for_memory_bound_and_explains_cache_resident():
    llc = 32 << 20
    fp32 = StepBytes(fixed=136e6, experts=142e6)  # cannot stay in a 32 MiB cache
    q4 = StepBytes(fixed=20e6, experts=20e6)  # the fixed part fits
    check = check_roofline(30.0, {"ort": (100.0, fp32), "peer f32": (125.0, fp32), "ort int4": (900.0, q4)}, llc)
    assert check["raised_by"] == "peer f32" and check["roofline_gbs"] == pytest.approx(125 * 278e6 / 1e9)
    d = check["decodes"]
    assert d["peer f32"]["fraction"] == pytest.approx(1.0) and "disturbed" in d["peer f32"]["note"]
    assert d["ort"]["fraction"] == pytest.approx(0.8) and d["ort"]["note"] == ""
    assert d["ort int4"]["fraction"] > 1 and d["ort int4"]["cache_resident"] and "cache" in d["ort int4"]["note"]
    quiet = check_roofline(40.0, {"ort": (100.0, fp32)}, None)
    assert quiet["raised_by"] is None and quiet["decodes"]["ort"]["fraction"] == pytest.approx(27.8 / 40)


def test_measure_bandwidth_reports_every_method():
    bw = measure_bandwidth(threads=2, buffer_mib=64, repeats=2)
    assert set(bw.methods) == set(METHODS) and bw.method in METHODS
    for m in bw.methods.values():
        assert len(m.samples_gbs) == 2 and 0 < m.min_gbs <= m.median_gbs <= m.best_gbs
    assert bw.gbs == max(m.best_gbs for m in bw.methods.values())
    assert bw.other_cores is None or bw.other_cores >= 0
    assert bw.to_json()["methods"]["ort_gemv"]["best_gbs"] > 0
    llc = last_level_cache_bytes()
    assert llc is None or llc >= 1 << 20


def test_noise_window_measures_wall_time():
    with Window() as w:
        sum(range(200_000))
    assert w.seconds > 0 and (w.other_cores is None or w.other_cores >= 0)
