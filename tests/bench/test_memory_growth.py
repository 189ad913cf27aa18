"""The run book's memory-growth bound (bench/memory_growth.py) with a fake memory reader: a steady engine
passes, a leak of a module per step fails with the figures, a bounded one-off allocation after the warm-up
passes, and the decode step function really grows one cache on a CPU engine."""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt.bench.memory_growth import BOUND_BYTES, DECODE_STEPS, decode_steps, measure_growth


class FakeDevice:
    def __init__(self, per_step: int, jitter: int = 0, once: int = 0) -> None:
        self.used, self.per_step, self.jitter, self.once, self.calls = 10 * 2**30, per_step, jitter, once, 0

    def step(self, i: int) -> None:
        self.calls += 1
        self.used += self.per_step + (self.jitter if i % 2 else -self.jitter)
        if i == 100:
            self.used += self.once

    def read(self) -> int:
        return self.used


def test_a_steady_engine_passes_with_its_samples():
    dev = FakeDevice(per_step=0, jitter=4096)
    result = measure_growth(dev.step, dev.read)
    assert dev.calls == DECODE_STEPS + result["warmup"] and result["steps"] == DECODE_STEPS
    assert abs(result["growth_bytes"]) <= 4096 and len(result["samples"]) == 10
    assert result["samples"][-1][0] == DECODE_STEPS and result["bound_bytes"] == BOUND_BYTES == 16 * 2**20


def test_a_module_per_step_leak_fails_with_the_figures():
    dev = FakeDevice(per_step=64 * 1024)  # 64 KiB a step: 62.5 MiB over 1,000 steps
    with pytest.raises(AssertionError, match=r"grew 62.5 MiB over 1000 decode steps \(64.0 KiB per step\), above "
                                             r"the bound of 16 MiB"):
        measure_growth(dev.step, dev.read)


def test_the_bound_is_inclusive_and_one_offs_count():
    dev = FakeDevice(per_step=0, once=BOUND_BYTES)
    assert measure_growth(dev.step, dev.read)["growth_bytes"] == BOUND_BYTES
    dev = FakeDevice(per_step=0, once=BOUND_BYTES + 1)
    with pytest.raises(AssertionError, match="above the bound"):
        measure_growth(dev.step, dev.read)
    dev = FakeDevice(per_step=17 * 1024)  # just over 16 KiB a step
    with pytest.raises(AssertionError):
        measure_growth(dev.step, dev.read)


def test_decode_steps_grow_one_cache(tiny_engine):
    calls = []

    class Spy:
        def forward(self, ids, cache=None):
            calls.append((np.asarray(ids).shape, None if cache is None else cache.length))
            return tiny_engine.forward(ids, cache)

    spy_step = decode_steps(Spy(), prompt_len=4)
    for i in range(3):
        spy_step(i)
    assert calls == [((1, 4), None), ((1, 1), 4), ((1, 1), 5)]
