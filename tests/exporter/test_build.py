"""`build`: manifest contents, and bad input giving one clear error with nothing left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from mixtral_trt.common.contract import CONTRACT_FILE, MODEL_FILE
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import MANIFEST_FILE, Manifest, sha256
from mixtral_trt.exporter.build import build_engine


def cli(*args: str) -> subprocess.CompletedProcess:
    code = "from mixtral_trt.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_manifest_records_artifacts(sliding_top3, tmp_path):
    _, onnx_dir = sliding_top3
    out = build_engine(onnx_dir, tmp_path / "engine", "ort")
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["backend"] == "ort" and manifest["dtype"] == "fp32"
    ours = {"cpu_kernels.so"} if "cpu_kernels" in manifest["backend_info"] else set()  # our kernels' library copy
    assert set(manifest["artifacts"]) == {MODEL_FILE, MODEL_FILE + ".data", "genai_config.json", *ours}  # hashed too
    for name, art in manifest["artifacts"].items():
        assert art["sha256"] == sha256(out / name) and art["size"] == (out / name).stat().st_size
    assert {"onnxruntime", "onnx", "torch", "mixtral-trt"} <= set(manifest["tool_versions"])
    assert manifest["contract"]["config"]["num_local_experts"] == 6
    assert Manifest.load(out).contract.config.top_k == 3


def test_tampered_engine_is_refused(sliding_top3, tmp_path):
    _, onnx_dir = sliding_top3
    out = build_engine(onnx_dir, tmp_path / "engine", "portable")
    data = out / (MODEL_FILE + ".data")
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(MixtralTrtError, match=r"model\.onnx\.data: sha256 differs"):
        Manifest.load(out)


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.parametrize("breakage", ["no_contract", "corrupt_model", "no_model", "bad_contract"])
def test_broken_export_dir_gives_clear_error(sliding_top3, tmp_path, breakage):
    _, onnx_dir = sliding_top3
    broken = tmp_path / "onnx"
    shutil.copytree(onnx_dir, broken)
    expected = {"no_contract": f"{CONTRACT_FILE}: missing", "corrupt_model": f"{MODEL_FILE}: cannot be read",
                "no_model": f"{MODEL_FILE}: missing", "bad_contract": f"{CONTRACT_FILE}: not valid JSON"}[breakage]
    if breakage == "no_contract":
        (broken / CONTRACT_FILE).unlink()
    elif breakage == "corrupt_model":
        (broken / MODEL_FILE).write_bytes(b"\x08\x07garbage" * 10)
    elif breakage == "no_model":
        (broken / MODEL_FILE).unlink()
    else:
        (broken / CONTRACT_FILE).write_text("{not json")
    result = cli("build", str(broken), str(tmp_path / "engine"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "engine").exists() and not _leftovers(tmp_path, "engine")


def test_build_refuses_unknown_backend_and_existing_output(sliding_top3, tmp_path):
    _, onnx_dir = sliding_top3
    with pytest.raises(MixtralTrtError, match="--backend 'tensorflow'"):
        build_engine(onnx_dir, tmp_path / "e", "tensorflow")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("user data")
    result = cli("build", str(onnx_dir), str(tmp_path / "taken"))
    assert result.returncode == 2 and "exists and is not empty" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "user data"
    assert not _leftovers(tmp_path, "taken")


def test_failure_during_build_leaves_nothing(sliding_top3, tmp_path, monkeypatch):
    import mixtral_trt.exporter.build as build

    _, onnx_dir = sliding_top3

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build, "tool_versions", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_engine(onnx_dir, tmp_path / "engine", "ort")
    assert list(tmp_path.iterdir()) == []
