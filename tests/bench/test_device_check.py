"""`device-check` on a CPU (no CUDA here): the whole command from a plain checkout (nothing installed, only the
packages a bare GPU machine has: imports of anything else fail), the report rewritten after every phase (a run
killed after phase 1 leaves a valid one), and the device-side references against the plugins' own.

The GPU side (compiled kernels at Mixtral's sizes, driver launches, timing) has not run here: the report says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mixtral_trt.bench.device_check import cases
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.plugins.moe_align.reference import moe_align_reference
from mixtral_trt.plugins.moe_gemm_down.reference import moe_gemm_down_reference
from mixtral_trt.plugins.moe_gemm_swiglu.reference import moe_gemm_swiglu_reference
from mixtral_trt.plugins.moe_router.reference import moe_router_reference

CHECKOUT = Path(__file__).resolve().parents[2]
# what a bare GPU machine lacks (besides TensorRT): importing any of these fails in the plain-checkout run
MISSING = ("typer", "rich", "click", "polygraphy", "mistral_common", "transformers", "tensorrt", "tensorrt_rtx",
           "tensorrt_bindings", "fastapi", "uvicorn", "starlette", "onnx_ir", "onnxscript", "onnxruntime_extensions",
           "llguidance", "jsonschema", "sentencepiece", "tokenizers", "pydantic", "huggingface_hub", "matplotlib",
           "ml_dtypes", "psutil", "pytest")
# the third-party packages the device check's own modules may import (a bare GPU machine has them)
ALLOWED = {"torch", "triton", "numpy", "safetensors", "onnx", "onnxruntime", "cupy", "cuda", "matplotlib"}

PLAIN_RUN = """
import ast, importlib.abc, json, sys
MISSING = set(sys.argv[1].split(","))
class Hidden(importlib.abc.MetaPathFinder):  # every finder as if MISSING were not installed
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            return None
        return self.inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Hidden(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
from mixtral_trt.bench.device_check.__main__ import main
code = main(sys.argv[2:])
import mixtral_trt.bench.device_check.driver, mixtral_trt.bench.device_check.trt_standin  # GPU-only paths: their
import mixtral_trt.bench.device_check.warmup, mixtral_trt.plugins.trt_registry  # imports must resolve too
third_party = set()
for name, module in list(sys.modules.items()):
    if name.startswith("mixtral_trt.bench.device_check") and getattr(module, "__file__", None):
        for node in ast.walk(ast.parse(open(module.__file__).read())):
            if isinstance(node, ast.Import):
                third_party |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                third_party.add(node.module.split(".")[0])
import mixtral_trt
print(json.dumps({"code": code, "package": mixtral_trt.__path__[0], "file": mixtral_trt.__file__,
                  "imports": sorted(third_party)}))
"""


def plain_checkout_env() -> dict[str, str]:
    """Only the checkout's bootstrap on the path (the installed package is not used), no user site."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    return {**env, "PYTHONPATH": str(CHECKOUT / "tools" / "pythonpath"), "PYTHONNOUSERSITE": "1"}


def test_the_whole_check_runs_from_a_plain_checkout_on_cpu_stand_ins(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-s", "-c", PLAIN_RUN, ",".join(MISSING), "--out", str(out),
                             "--cpu-smoke", "--launches", str(tmp_path / "no-launch-file")],
                            cwd=tmp_path, env=plain_checkout_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["package"] == str(CHECKOUT) and answer["file"].startswith(str(CHECKOUT / "tools" / "pythonpath"))
    stdlib = set(sys.stdlib_module_names) | {"mixtral_trt", "__future__"}
    assert set(answer["imports"]) - stdlib <= ALLOWED, f"device check imports {set(answer['imports']) - stdlib}"
    report = json.loads((out / "device_check.json").read_text())
    print(json.dumps({n: (p["status"], p["seconds"], len(p["checks"])) for n, p in report["phases"].items()}))
    assert answer["code"] == 0 and report["passed"] is True
    assert report["machine"] == "cpu" and report["gpu_executed"] is False and "CPU stand-ins" in report["note"]
    assert report["cpu_stand_ins"] == list(report["phases"]) == ["environment and ceilings", "kernels",
                                                                   "launch contract", "plugin chain"]
    assert report["plot"] == "not written: matplotlib is not importable here"
    kernels, contract, chain = (report["phases"][n] for n in ("kernels", "launch contract", "plugin chain"))
    # every variant and tactic of both GEMMs, the router in each dtype, the align kernel
    assert len(kernels["checks"]) == 3 + 1 + 9 * 3 * 2 and all(c["passed"] for c in kernels["checks"])
    assert contract["status"] == "skipped" and "make device-check-launches" in contract["skipped"][0]["why"]
    model = chain["figures"]["model"]
    assert model["greedy_match"] == "4/4" and model["logits_max_rel"] < 1e-4
    assert {r["weights"] for r in chain["figures"]["moe_layer"]} == {"bf16", "int8", "int4"}


def test_a_run_killed_after_phase_1_leaves_a_valid_report(tmp_path):
    env = {**plain_checkout_env(), "PYTHONNOUSERSITE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mixtral_trt.bench.device_check", "--out", str(tmp_path),
                                "--cpu-smoke"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    path, report = tmp_path / "device_check.json", None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if path.is_file():
                report = json.loads(path.read_text())  # always whole: written atomically
                if "kernels" in report["phases"]:
                    break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        stderr = process.communicate()[1]
    assert report is not None and "kernels" in report["phases"], stderr[-2000:]
    report = json.loads(path.read_text())
    first = report["phases"]["environment and ceilings"]
    assert first["status"] == "passed" and first["figures"]["copy_bandwidth_gb_s"] > 0
    assert first["figures"]["environment"]["packages"]["torch"] == torch.__version__.split("+")[0] or \
        first["figures"]["environment"]["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert report["phases"]["kernels"]["status"] == "running" and report["passed"] is None


def test_unknown_phase_is_one_line_error(cli, tmp_path):
    result = cli("device-check", "--out", tmp_path, "--phases", "1,7", "--cpu-smoke")
    assert result.code == 2 and "--phases: no phase 7" in result.err and "Traceback" not in result.err


# ---- the device-side references against the plugins' own (row loops on CPU) -----------------------------
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize(("t", "quant"), [(1, None), (37, None), (9, "int8"), (9, "int4")])
def test_references_equal_the_plugins_own(dtype, t, quant):
    shape, block = cases.Shape("t", 6, 2, 64, 96), 16
    logits = cases.router_logits(t, shape.experts, "cpu")
    weights, experts = cases.router_reference(logits, shape.top_k)
    ref_w, ref_e = moe_router_reference(logits, shape.top_k)
    assert torch.equal(weights, ref_w) and torch.equal(experts, ref_e)
    routing = cases.align_reference(experts, shape.experts, block)
    assert all(torch.equal(a, b) for a, b in zip(routing, moe_align_reference(experts, shape.experts, block),
                                                 strict=True))
    x = torch.randn(t, shape.hidden, generator=torch.Generator().manual_seed(0)).to(cases.torch_dtype(dtype))
    if quant is None:
        w13, w2 = cases.float_experts(shape, dtype, "cpu")
    else:
        bits, group = cases.QUANTS[quant], cases.group_for(quant)
        c13, s13 = cases.random_codes(shape.experts, 2 * shape.inter, shape.hidden, bits, group, dtype, "cpu")
        w13 = cases.dequantize(c13, s13, bits, dtype)
        ours = QuantScheme(bits, group).dequantize(c13.numpy(), s13.float().numpy())  # common/quant.py's
        assert np.array_equal(w13.float().numpy(), torch.from_numpy(ours).to(w13.dtype).float().numpy())
        w2 = cases.dequantize(*cases.random_codes(shape.experts, shape.hidden, shape.inter, bits, group, dtype,
                                                  "cpu"), bits, dtype)
    inter = cases.swiglu_reference(x, *routing, w13, shape.top_k, block)
    theirs = moe_gemm_swiglu_reference(x, *routing, w13, shape.top_k, block)
    rows = cases.real_rows(routing[0], routing[2], t * shape.top_k)
    assert rows.numel() == t * shape.top_k
    one_ulp = {"fp32": 1e-6, "fp16": 1e-3, "bf16": 8e-3}[dtype]  # a matmul vs row dot products: last-bit rounding
    assert cases.rel_error(inter, theirs) < one_ulp
    y = cases.down_reference(inter, *routing, weights, w2, block)
    assert cases.rel_error(y, moe_gemm_down_reference(inter, *routing, weights, w2, shape.top_k, block)) < one_ulp


def test_rel_error_flags_unwritten_outputs():
    ref = torch.ones(4, 3)
    got = ref.clone()
    got[2, 1] = float("nan")
    assert cases.rel_error(got, ref) == float("inf")
    assert cases.rel_error(ref + 1e-3, ref) == pytest.approx(1e-3, rel=1e-3)


# ---- the GPU-only pieces that can be exercised without one ---------------------------------------------------
class FakeLibcuda:
    """Records the driver calls `driver.Kernel.launch` makes, reading kernelParams back as the driver would."""

    def __init__(self, types: list) -> None:
        self.types, self.calls = types, []

    def cuFuncSetAttribute(self, function, attribute, value):  # noqa: N802  (the driver's names)
        self.calls.append(("cuFuncSetAttribute", attribute, value.value))
        return 0

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):  # noqa: N802

        values = [t.from_address(params[i]).value for i, t in enumerate(self.types)]
        self.calls.append(("cuLaunchKernel", (gx.value, gy.value, gz.value), (bx.value, by.value, bz.value),
                           shared.value, stream.value, values))
        return 0


def test_driver_launch_passes_inputs_scalars_outputs_in_order():
    import ctypes

    from mixtral_trt.bench.device_check import driver

    lib = FakeLibcuda([ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int32, ctypes.c_int32, ctypes.c_uint64])
    fake = driver.Driver.__new__(driver.Driver)
    fake.lib = lib
    kernel = driver.Kernel(fake, None, None, "k")
    kernel.launch([32, 224], [128], 64 * 1024, [0x1000, 0x2000], [4096, -3], [0x3000], stream=0x77)
    assert lib.calls == [("cuFuncSetAttribute", driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 65536),
                         ("cuLaunchKernel", (32, 224, 1), (128, 1, 1), 65536, 0x77,
                          [0x1000, 0x2000, 4096, -3, 0x3000])]


def test_layer_targets_are_checked_on_the_best_tactic(tmp_path):
    from mixtral_trt.bench.device_check.chain import _targets
    from mixtral_trt.bench.device_check.report import Report

    def row(weights, t, tactic, ms, bw, mm):
        return {"weights": weights, "T": t, "tactic": tactic, "ms": ms, "fraction_of_bandwidth_floor": bw,
                "fraction_of_matmul_floor": mm}

    rows = [row("bf16", 1, 1, 0.40, 0.59, 0.0), row("bf16", 1, 2, 0.38, 0.62, 0.0),
            row("bf16", 4096, 3, 9.0, 0.1, 0.49), row("int4", 1, 1, 0.16, 0.4, 0.0)]
    report = Report(tmp_path, "cuda", 330)
    with report.phase("plugin chain", 100, "cuda") as phase:
        _targets(phase, rows)
    checks = report.data["phases"]["plugin chain"]["checks"]
    assert [(c["value"], c["passed"]) for c in checks] == [(0.62, True), (0.49, False), (2.38, False)]
    assert checks[0]["tactic"] == 2 and report.data["phases"]["plugin chain"]["status"] == "failed"
    assert report.data["cpu_stand_ins"] == [] and report.data["gpu_executed"] is True
    assert json.loads((tmp_path / "device_check.json").read_text())["phases"]["plugin chain"]["status"] == "failed"


@pytest.mark.parametrize(("capability", "driver", "why"), [((9, 0), 13000, None), ((9, 0), 13020, None),
                                                          ((8, 0), 13000, "record it with --arch sm_80"),
                                                          ((9, 0), 12080, "record it with --cuda 12.8")])
def test_recorded_ptx_this_gpu_cannot_load_is_skipped_with_the_reason(monkeypatch, capability, driver, why):
    from mixtral_trt.bench.device_check.contract import unloadable

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: capability)
    found = unloadable({"arch": "sm_90a", "cuda": "13.0", "ptx_version": "9.0"}, driver)
    assert found == why or (why and why in found)


def test_device_check_py_at_the_checkout_root_needs_no_pythonpath(tmp_path):
    env = {k: v for k, v in plain_checkout_env().items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-s", str(CHECKOUT / "device_check.py"), "--out", str(tmp_path),
                             "--phases", "1", "--cpu-smoke"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert list(report["phases"]) == ["environment and ceilings"] and report["passed"] is True
