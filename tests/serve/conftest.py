"""Fixtures of the serve tests: a tiny engine with max batch 8, one shared server with an API key, and a
slowed-down engine for the timing-dependent robustness cases."""

from __future__ import annotations

import time

import pytest

from support.serving import API_KEY, start


@pytest.fixture(scope="session")
def serve_engine_dir(tiny_ckpt, tiny_root):
    """fp32 ort engine of the tiny checkpoint: max_seq 256, max_batch 8."""
    from support.engines import engine

    return engine(tiny_ckpt, tiny_root, max_batch=8)


@pytest.fixture(scope="session")
def serve_engine(serve_engine_dir):
    from mixtral_trt import runtime

    return runtime.load(serve_engine_dir)



@pytest.fixture(scope="session")
def server(serve_engine):
    """One server for the API tests, with an API key."""
    with start(serve_engine, api_key=API_KEY) as served:
        yield served


@pytest.fixture
def slow_engine(serve_engine_dir):
    """A separate Engine whose every call takes 20 ms more: requests stay in flight long enough to be
    disconnected, queued or refused on purpose."""
    from mixtral_trt import runtime

    eng = runtime.load(serve_engine_dir, verify=False)
    run = eng.runner.run

    def slow(feeds, names):
        time.sleep(0.02)
        return run(feeds, names)

    eng.runner.run = slow
    return eng
