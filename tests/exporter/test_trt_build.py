"""TensorRT build: profile logic, a real parse + build of a plugin-free graph with TensorRT-RTX on CPU,
the clear error where TensorRT is absent, and the GPU suite (skipped without CUDA + TensorRT)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from mixtral_trt.common.contract import MODEL_FILE, TOTAL, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.trt_build import DECODE_MAX_SEQ, PLAN_FILE, profiles_for, use_timing_cache
from mixtral_trt.runtime.backends.trt import check_trt_compatibility

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_profiles_keep_mask_length_equal_to_past_plus_seq(sliding_top3):
    _, onnx_dir = sliding_top3
    contract = GraphContract.load(onnx_dir)
    decode, prefill = profiles_for(contract, max_prefill=100)
    assert decode.seq == (1, 1, DECODE_MAX_SEQ) and prefill.seq[2] == 100
    assert decode.past[2] == prefill.past[2] == contract.max_seq - 1
    for profile in (decode, prefill):
        shapes = profile.shapes(contract)
        for point in range(3):  # min, opt, max
            b, t = shapes["input_ids"][point]
            assert shapes["attention_mask"][point] == (b, profile.past[point] + t)
            assert shapes["past_key_values.0.key"][point][2] == profile.past[point]
    assert TOTAL in dict((t.name, t.shape) for t in contract.inputs)["attention_mask"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed")
def test_dense_engine_builds_with_tensorrt_rtx_without_the_plugins(sliding_top3, tmp_path, monkeypatch):
    """`build --backend trt-dense` end to end with TensorRT-RTX's builder and ONNX parser standing in for
    TensorRT (they run without a GPU): the portable graph parses, a plan builds with both optimization
    profiles, and the plugin layer is never touched (the backend table: trt-dense holds no plugin nodes)."""
    import tensorrt_rtx

    from mixtral_trt.exporter import trt_build
    from mixtral_trt.plugins import trt_registry

    def no_plugins():
        raise AssertionError("register_plugins() called for a graph without plugin nodes")

    monkeypatch.setattr(trt_build, "import_tensorrt", lambda: tensorrt_rtx)
    monkeypatch.setattr(trt_registry, "register_plugins", no_plugins)
    _, onnx_dir = sliding_top3
    engine = build_engine(onnx_dir, tmp_path / "dense", "trt-dense", max_prefill=64, timing_cache=tmp_path / "t.cache")
    manifest = Manifest.load(engine)
    info = manifest.backend_info
    assert manifest.backend == "trt-dense" and (engine / PLAN_FILE).stat().st_size > 100_000
    assert info["tensorrt"] == tensorrt_rtx.__version__ and info["max_tokens_per_call"] == 64
    assert info["debug_outputs"] is False and "plugin_kernels" not in info
    assert not (engine / MODEL_FILE).exists()


class TimingConfig:
    """A builder config whose set_timing_cache refuses every cache but `accepted` (TensorRT's answer to a cache
    from another version or GPU, with ignore_mismatch=False)."""

    def __init__(self, accepted: bytes | None) -> None:
        self.accepted, self.set = accepted, []

    def create_timing_cache(self, blob: bytes):
        return blob

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.set.append(cache)
        return cache == self.accepted


def test_a_refused_timing_cache_is_replaced_by_a_new_one(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"from another GPU")
    config = TimingConfig(accepted=b"")
    with pytest.warns(UserWarning, match="timing cache refused"):
        cache, note = use_timing_cache(config, path)
    assert cache == b"" and config.set == [b"from another GPU", b""] and "starting a new one" in note
    assert use_timing_cache(TimingConfig(accepted=b"from another GPU"), path) == (b"from another GPU", None)
    assert use_timing_cache(config, None) == (None, None)
    with pytest.raises(MixtralTrtError, match="refused an empty timing cache"), pytest.warns(UserWarning):
        use_timing_cache(TimingConfig(accepted=None), path)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed")
def test_build_trt_without_tensorrt_is_a_clear_error(sliding_top3, tmp_path):
    _, onnx_dir = sliding_top3
    code = "from mixtral_trt.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "build", str(onnx_dir), str(tmp_path / "e"),
                             "--backend", "trt"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs TensorRT and a CUDA GPU" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "e").exists()


def test_plan_compatibility_check(sliding_top3):
    _, onnx_dir = sliding_top3
    manifest = Manifest("trt", GraphContract.load(onnx_dir), PLAN_FILE, {}, {},
                        backend_info={"tensorrt": "10.13.0", "compute_capability": "9.0"})
    check_trt_compatibility(manifest, "10.13.0", "9.0")
    with pytest.raises(MixtralTrtError, match="built with TensorRT 10.13.0, this is TensorRT 11.0"):
        check_trt_compatibility(manifest, "11.0", "9.0")
    with pytest.raises(MixtralTrtError, match="compute capability 9.0, this GPU is 8.0"):
        check_trt_compatibility(manifest, "10.13.0", "8.0")
