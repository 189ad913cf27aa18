"""Engine manifests name only files inside the engine directory, and every file the backend opens is hashed
(common/artifacts.py, common/manifest.py; issue 10, item 5). Limits that make no engine are refused at load.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import sha256


@pytest.fixture
def engine_copy(tiny_engine_dir, tmp_path):
    return shutil.copytree(tiny_engine_dir, tmp_path / "engine")


def _edit(engine, edit) -> None:
    path = engine / "manifest.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _move(d, old, new, model_file=False):
    d["artifacts"][new] = d["artifacts"].pop(old)
    if model_file:
        d["model_file"] = new


def _refused(engine, *words):
    with pytest.raises(MixtralTrtError) as info:
        runtime.load(engine)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_model_file_outside_the_directory_is_refused(engine_copy, tiny_engine_dir):
    _edit(engine_copy, lambda d: _move(d, "model.onnx", f"../{tiny_engine_dir.name}/model.onnx", True))
    shutil.copytree(tiny_engine_dir, engine_copy.parent / tiny_engine_dir.name)  # a real file there
    _refused(engine_copy, "manifest.json", "../", "not a path inside the engine directory")


def test_absolute_artifact_path_is_refused(engine_copy, tiny_engine_dir):
    absolute = str(tiny_engine_dir / "model.onnx")
    _edit(engine_copy, lambda d: _move(d, "model.onnx", absolute, True))
    _refused(engine_copy, absolute, "not a path inside the engine directory")


def test_artifact_linked_outside_is_refused(engine_copy, tiny_engine_dir):
    (engine_copy / "model.onnx.data").unlink()
    os.symlink(tiny_engine_dir / "model.onnx.data", engine_copy / "model.onnx.data")  # same bytes, same hash
    _refused(engine_copy, "model.onnx.data", "outside")


def test_unlisted_external_data_is_refused(engine_copy):
    _edit(engine_copy, lambda d: d["artifacts"].pop("model.onnx.data"))
    data = engine_copy / "model.onnx.data"
    data.write_bytes(b"\x7f" * 4096 + data.read_bytes()[4096:])  # tampered, and nothing would notice
    _refused(engine_copy, "model.onnx.data", "not listed in manifest.json")


def test_external_data_outside_the_directory_is_refused(engine_copy, tmp_path):
    import onnx

    model = onnx.load_model(str(engine_copy / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = "../elsewhere.data"
    onnx.save_model(model, str(engine_copy / "model.onnx"))
    size = (engine_copy / "model.onnx").stat().st_size
    _edit(engine_copy, lambda d: d["artifacts"].update({"model.onnx": {"sha256": sha256(engine_copy / "model.onnx"),
                                                                       "size": size}}))
    _refused(engine_copy, "external data", "../elsewhere.data", "not a path inside the engine directory")


@pytest.mark.parametrize(("key", "value"), [("max_batch", 0), ("max_batch", -1), ("max_seq", -5), ("max_seq", 0),
                                            ("max_batch", "4"), ("max_seq", 2.5), ("max_batch", True)])
def test_limits_that_make_no_engine_are_refused_at_load(engine_copy, key, value):
    _edit(engine_copy, lambda d: d["contract"].update({key: value}))
    _refused(engine_copy, "manifest.json", key, "expected a positive integer")


def test_the_untouched_engine_loads(engine_copy):
    assert runtime.load(engine_copy).max_batch == 4
