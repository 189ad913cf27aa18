"""The GPU run book (`mixtral-export gpu-check`): its step runner records every step and goes on after a failure,
and on a machine without a GPU (this one) it stops at once with a one-line error and writes nothing. The steps
themselves need an NVIDIA GPU and TensorRT: not executed here."""

from __future__ import annotations

import pytest
import torch

from mixtral_trt.bench.gpu_check import Skipped, run_steps


def test_steps_run_on_after_a_failure():
    ran = []

    def ok():
        ran.append("ok")
        return {"value": 1}

    def broken():
        ran.append("broken")
        raise AssertionError("trt parity failed: logits 3.1e-1")

    results = run_steps({"first": ok, "second": broken, "third": ok})
    assert ran == ["ok", "broken", "ok"]
    assert results["first"]["passed"] and results["first"]["value"] == 1 and results["third"]["passed"]
    assert not results["second"]["passed"] and "logits 3.1e-1" in results["second"]["error"]
    assert all(r["seconds"] >= 0 for r in results.values())


def test_a_step_that_cannot_run_here_is_skipped_with_why_not_failed():
    def no_tensorrt():
        raise Skipped("TensorRT is not installed here")

    results = run_steps({"build trt": no_tensorrt, "parity ort CUDA QMoE int8": lambda: {"logits_max_rel": 0.01}})
    skipped = results["build trt"]
    assert skipped["passed"] is None and skipped["skipped"] == "TensorRT is not installed here"
    assert "error" not in results["build trt"] and results["parity ort CUDA QMoE int8"]["passed"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_gpu_check_without_a_gpu_is_a_clear_error(cli, tmp_path):
    result = cli("gpu-check", "--out", tmp_path / "report.json", "--workdir", tmp_path / "work")
    assert result.code == 2 and "gpu-check needs a CUDA GPU" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "work").exists()
