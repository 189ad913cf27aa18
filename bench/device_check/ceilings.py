"""Phase 1: what the check runs on (GPU, driver, versions) and the two ceilings phase 4's floors come from,
measured in the same run: device-to-device copy bandwidth (bytes read + written per second) and dense bf16
matmul throughput (fp32 on a CPU stand-in)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from mixtral_trt.plugins.ptx import driver_cuda_version

from .measure import seconds
from .report import Phase

PACKAGES = ("torch", "triton", "numpy", "safetensors", "onnx", "onnxruntime", "cupy-cuda13x", "cuda-bindings",
            "cuda-python", "matplotlib", "tensorrt")


def environment(device: str) -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
                           "cuda_driver": driver_cuda_version(), "torch_cuda": torch.version.cuda,
                           "cpu_count": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update({"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count,
                    "l2_bytes": getattr(props, "L2_cache_size", None)})
    return env


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes moved (read + written) per second by a device-to-device copy of `nbytes`."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / seconds(lambda: dst.copy_(src), device, repeats=20 if device == "cuda" else 5)


def matmul_throughput(device: str, n: int) -> float:
    """FLOP/s of an n x n x n matmul (bf16 on the GPU, fp32 on a CPU stand-in)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / seconds(lambda: a @ b, device, repeats=20 if device == "cuda" else 3)


def run_phase(phase: Phase, device: str) -> dict[str, float]:
    """Records the environment and the ceilings; returns {"copy_bytes_per_s", "matmul_flop_per_s"}."""
    env = environment(device)
    phase.figure("environment", env)
    phase.ran("environment")
    big = device == "cuda"
    bandwidth = copy_bandwidth(device, 2**30 if big else 2**26)
    phase.figure("copy_bandwidth_gb_s", round(bandwidth / 1e9, 1))
    phase.ran(f"device-to-device copy of {'1 GiB' if big else '64 MiB'}")
    flops = matmul_throughput(device, 8192 if big else 512)
    phase.figure("matmul_tflop_s", round(flops / 1e12, 3))
    phase.figure("matmul_dtype", "bf16" if big else "fp32")
    phase.ran(f"{'bf16 8192' if big else 'fp32 512'}^3 matmul")
    if big:
        phase.check("copy bandwidth measured", round(bandwidth / 1e9, 1), "> 0 GB/s", bandwidth > 0)
    return {"copy_bytes_per_s": bandwidth, "matmul_flop_per_s": flops}
