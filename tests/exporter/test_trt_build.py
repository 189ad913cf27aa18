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
from mixtral_trt.exporter.trt_build import DECODE_MAX_SEQ, PLAN_FILE, build_plan, profiles_for
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
def test_portable_graph_parses_and_builds_with_tensorrt_rtx(sliding_top3, tmp_path):
    """TensorRT-RTX's builder and ONNX parser run without a GPU: the graph TensorRT receives (minus the
    plugin nodes) parses, and a plan builds with both optimization profiles."""
    import onnx_ir as ir
    import tensorrt_rtx

    from mixtral_trt.exporter.lowering import lower

    _, onnx_dir = sliding_top3
    contract = GraphContract.load(onnx_dir)
    ir.save(lower(ir.load(onnx_dir / MODEL_FILE), "portable"), tmp_path / MODEL_FILE,
            external_data=MODEL_FILE + ".data")
    plan, info = build_plan(tmp_path / MODEL_FILE, contract, tmp_path, max_prefill=64, timing_cache=None,
                            trt_module=tensorrt_rtx)
    assert plan == PLAN_FILE and (tmp_path / PLAN_FILE).stat().st_size > 100_000
    assert info["tensorrt"] == tensorrt_rtx.__version__ and info["max_tokens_per_call"] == 64
    assert info["debug_outputs"] is False


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
