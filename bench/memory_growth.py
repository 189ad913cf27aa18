"""Device-memory growth over a long decode (the GPU run book's check for NVIDIA/TensorRT#4849: AOT plugins
that leak a CUDA module on every input-shape change, and a decode step changes shapes every step as the KV
cache grows). Measured on whatever TensorRT is installed, not assumed from its version number.

`measure_growth` takes the step and the memory reader as functions, so its bound logic runs on the CPU with a
fake reader (tests/bench/test_memory_growth.py); on a GPU the reader is the device's used memory
(`cuda_used_bytes`: total - free, which sees TensorRT's and the driver's allocations, not only torch's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# 1,000 steps of decode; a leak of one kernel module per step (tens of KiB of code and data each, for the
# six plugins' kernels) shows as tens of MiB; a steady engine stays within the allocator's own slack.
DECODE_STEPS = 1000
WARMUP_STEPS = 16  # first calls: lazy module loads, workspace and allocator pools
BOUND_BYTES = 16 * 2**20  # 16 MiB over 1,000 steps: fails any steady leak of 16 KiB per step or more
SAMPLES = 10


def measure_growth(step: Callable[[int], None], read_used: Callable[[], int], steps: int = DECODE_STEPS,
                   warmup: int = WARMUP_STEPS, bound_bytes: int = BOUND_BYTES) -> dict[str, Any]:
    """Run `step(i)` warmup + steps times; the used memory after the warm-up, at SAMPLES points and at the end.
    Raises AssertionError (a failed run-book step) when the growth exceeds `bound_bytes`."""
    for i in range(warmup):
        step(i)
    base = read_used()
    every = max(1, steps // SAMPLES)
    samples = []
    for i in range(steps):
        step(warmup + i)
        if (i + 1) % every == 0 or i + 1 == steps:
            samples.append([i + 1, read_used() - base])
    growth = samples[-1][1]
    result = {"steps": steps, "warmup": warmup, "base_bytes": base, "growth_bytes": growth,
              "growth_per_step_bytes": growth / steps, "bound_bytes": bound_bytes, "samples": samples}
    if growth > bound_bytes:
        raise AssertionError(f"device memory grew {growth / 2**20:.1f} MiB over {steps} decode steps "
                             f"({growth / steps / 1024:.1f} KiB per step), above the bound of "
                             f"{bound_bytes / 2**20:.0f} MiB (NVIDIA/TensorRT#4849: a plugin module per shape change)")
    return result


def cuda_used_bytes() -> int:
    """The device's used memory (GPU only)."""
    import torch

    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return total - free


def decode_steps(engine, prompt_len: int = 8) -> Callable[[int], None]:
    """A step function: one decode token per call on one growing cache (greedy), prefilled with `prompt_len`
    tokens first; each call has a new past length, i.e. new input shapes."""
    import numpy as np

    state: dict[str, Any] = {}

    def step(i: int) -> None:
        if "cache" not in state:
            out, state["cache"] = engine.forward(np.arange(1, prompt_len + 1, dtype=np.int64)[None])
        else:
            out, state["cache"] = engine.forward(state["next"], state["cache"])
        state["next"] = np.asarray(out["logits"])[:, -1:].argmax(-1).astype(np.int64)

    return step
