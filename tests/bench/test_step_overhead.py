"""bench/step_overhead.py: a decode step's CPU time split into ONNX Runtime's session run and the runtime around it,
engines (and builds of our CPU kernels) alternating."""

from __future__ import annotations

import pytest

from mixtral_trt.bench.step_overhead import measure
from mixtral_trt.common.manifest import Manifest
from support.engines import engine, tiny_checkpoint


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("step-overhead")
    checkpoint = tiny_checkpoint(root)
    return [engine(checkpoint, root, backend) for backend in ("ort", "ort-gqa")]


def test_each_engine_splits_its_step(engines):
    result = measure(engines, threads=1, context=8, steps=3, rounds=2, batch=2)
    assert list(result) == [str(e) for e in engines]
    for split in result.values():
        assert split["session_ms"] > 0 and split["outside_ms"] > 0
        assert split["session_ms"] + split["outside_ms"] == pytest.approx(split["total_ms"], rel=1e-9)


def test_libraries_alternate_on_each_engine(engines):
    library = Manifest.load(engines[1], verify=False).backend_info.get("cpu_kernels", {}).get("library")
    if not library:
        pytest.skip("the engines were built without our CPU kernels (library not built)")
    path = engines[1] / library
    result = measure(engines[1:], threads=1, context=8, steps=2, rounds=1, libraries=[path, path])
    assert list(result) == [f"{engines[1]} @ {path}"]  # the same build twice: one entry
