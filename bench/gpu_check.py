"""The GPU run book as one function (`mixtral-export gpu-check`, `make gpu-check`): on a machine with an NVIDIA
GPU and the `gpu` extra, build the `small` preset's TensorRT engines with and without the plugins (fp16), check
both against the float32 reference (parity), check an int8 ONNX Runtime engine's QMoE on the CUDA EP against the
reference (onnxruntime-gpu packs its raw codes itself: common/ort_versions.py), measure the plugin engine's
device-memory growth over 1,000 decode steps (bench/memory_growth.py, NVIDIA/TensorRT#4849), run the `gpu` test
suite, benchmark them against ONNX Runtime, and write everything to one JSON report. Every step runs even when an
earlier one failed (a step that needs a missing engine reports that); the report says which passed.

Written against the documented APIs; it has not run on a GPU here (this project's machines have none).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.common.progress import step
from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.plugins.ptx import driver_cuda_version
from mixtral_trt.plugins.trt_registry import check_tensorrt

from .memory_growth import cuda_used_bytes, decode_steps, measure_growth

ENGINES = ("trt", "trt-dense")  # with the sparse-dispatch plugins; the dense baseline


class Skipped(Exception):
    """A step that cannot run on this machine (e.g. no TensorRT): reported as skipped, with why, not failed."""


def gpu_environment() -> dict[str, Any]:
    """What the engines will run on; a one-line error when this machine cannot build them."""
    import importlib.metadata

    import torch

    if not torch.cuda.is_available():
        raise MixtralTrtError("gpu-check needs a CUDA GPU and a CUDA build of torch; none is visible here")
    try:
        import tensorrt
    except ImportError:  # the ONNX Runtime steps still run; the TensorRT ones report why they did not
        tensorrt = None
    import onnxruntime

    from mixtral_trt.plugins.aot import target

    if tensorrt is not None:
        check_tensorrt(tensorrt.__version__)
    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
            "cuda_driver": driver_cuda_version(), "torch": torch.__version__,
            "tensorrt": None if tensorrt is None else tensorrt.__version__,
            "triton": importlib.metadata.version("triton"), "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(), "plugin_kernels": target().describe()}


def run_steps(steps: dict[str, Callable[[], dict[str, Any]]], progress=None) -> dict[str, dict[str, Any]]:
    """Each step's result with `passed` and `seconds`; an exception fails its step, not the run; a `Skipped`
    step has `passed` None and `skipped` (why)."""
    results = {}
    for name, fn in steps.items():
        start = time.perf_counter()
        with step(progress, name):
            try:
                result = {"passed": True, **fn()}
            except Skipped as e:
                result = {"passed": None, "skipped": str(e)}
            except Exception as e:  # recorded in the report: the run book goes on
                result = {"passed": False, "error": f"{type(e).__name__}: {e}",
                          "traceback": traceback.format_exc(limit=8)}
        results[name] = {**result, "seconds": round(time.perf_counter() - start, 1)}
    return results


def _pytest_gpu(tests: Path) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", str(tests)],
                            capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-40:]
    if result.returncode != 0:
        raise AssertionError(f"pytest -m gpu exited {result.returncode}: " + (tail[-1] if tail else result.stderr))
    return {"summary": tail[-1] if tail else "", "output_tail": tail}


def run_gpu_check(out: Path, workdir: Path, preset: str = "small", tests: Path | None = None,
                  greedy_steps: int = 16, progress=None) -> dict[str, Any]:
    """Run the book, write `out` (JSON) and return the report; `tests`: the repository's tests/ for `pytest -m
    gpu` (None: that step is skipped)."""
    from mixtral_trt.bench.run import BenchSettings, run_bench
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.export import export_checkpoint
    from mixtral_trt.mixtral_ref.writer import init_checkpoint
    from mixtral_trt.parity import check_engine

    environment = gpu_environment()
    workdir = Path(workdir)
    ckpt, onnx_dir = workdir / f"{preset}-checkpoint", workdir / f"{preset}-onnx-fp16"
    qmoe_onnx, qmoe_engine = workdir / f"{preset}-onnx-fp16-int8", workdir / f"{preset}-engine-ort-cuda-int8"

    def checkpoint() -> dict[str, Any]:
        if not ckpt.exists():
            init_checkpoint(get_preset(preset), ckpt, seed=0)
        if not onnx_dir.exists():
            export_checkpoint(ckpt, onnx_dir, dtype="fp16", max_seq=1024, max_batch=4, progress=progress)
        return {"checkpoint": str(ckpt), "export": str(onnx_dir)}

    def build(backend: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            engine = build_engine(onnx_dir, workdir / f"{preset}-engine-{backend}", backend, overwrite=True,
                                  progress=progress, debug_outputs=True)  # per-layer parity
            info = json.loads((engine / "manifest.json").read_text())["backend_info"]
            return {"engine": str(engine), "backend_info": info}
        return run

    def parity(backend: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            report = check_engine(workdir / f"{preset}-engine-{backend}", ckpt, greedy_steps=greedy_steps)
            if not report.passed:
                raise AssertionError(f"{backend} parity failed: {report.failures}")
            return {"logits_max_rel": report.logits.max_rel, "greedy_exact": [g.exact for g in report.greedy]}
        return run

    def qmoe_cuda() -> dict[str, Any]:
        """int8 experts (block-wise scales) as one QMoE node per layer on the CUDA EP, against the reference."""
        from mixtral_trt import runtime

        if not qmoe_onnx.exists():
            export_checkpoint(ckpt, qmoe_onnx, dtype="fp16", max_seq=1024, max_batch=4, quantize_experts="int8",
                              progress=progress)
        build_engine(qmoe_onnx, qmoe_engine, "ort", overwrite=True, progress=progress, experts="moe",
                     genai_provider="cuda")
        runtime.load(qmoe_engine, device="cuda")  # refused if the CUDA EP cannot run its QMoE (one line)
        report = check_engine(qmoe_engine, ckpt, greedy_steps=greedy_steps)  # device auto: the CUDA EP
        if not report.passed:
            raise AssertionError(f"ort CUDA QMoE parity failed: {report.failures}")
        return {"engine": str(qmoe_engine), "device": "cuda", "logits_max_rel": report.logits.max_rel,
                "greedy_exact": [g.exact for g in report.greedy]}

    def memory_growth() -> dict[str, Any]:
        from mixtral_trt import runtime

        engine = runtime.load(workdir / f"{preset}-engine-trt")
        return measure_growth(decode_steps(engine), cuda_used_bytes)

    def bench() -> dict[str, Any]:
        result = run_bench(BenchSettings(preset=preset, backends=("ort", *ENGINES), workdir=workdir / "bench",
                                         hf=False), progress)
        missing = [b for b in ENGINES if b not in result.decode]
        if missing:
            raise AssertionError(f"bench skipped {missing}: {result.skipped}")
        return {"decode_tok_s": result.decode, "prefill_tok_s": result.prefill,
                "moe_layer": result.to_json()["moe_layer"]}

    def needs_tensorrt(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            if environment["tensorrt"] is None:
                raise Skipped("TensorRT is not installed here (PyPI's tensorrt wheels fetch it from NVIDIA's index)")
            return fn()
        return run

    steps: dict[str, Callable[[], dict[str, Any]]] = {"checkpoint and fp16 export": checkpoint}
    steps.update({f"build {b}": needs_tensorrt(build(b)) for b in ENGINES})
    steps.update({f"parity {b}": needs_tensorrt(parity(b)) for b in ENGINES})
    steps["parity ort CUDA QMoE int8"] = qmoe_cuda
    steps["memory growth trt, 1,000 decode steps"] = needs_tensorrt(memory_growth)
    if tests is not None:
        steps["pytest -m gpu"] = needs_tensorrt(lambda: _pytest_gpu(tests))
    steps["bench"] = needs_tensorrt(bench)
    results = run_steps(steps, progress)
    report = {"passed": all(r["passed"] is not False for r in results.values()), "preset": preset,
              "environment": environment, "steps": results,
              "skipped": {name: r["skipped"] for name, r in results.items() if r["passed"] is None}}
    with atomic_file(out) as f:
        f.write(json.dumps(report, indent=2, default=str) + "\n")
    return report
