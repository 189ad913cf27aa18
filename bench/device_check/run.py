"""The device check's four phases in order, each within its own time budget, the report rewritten after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.plugins.interpreter import require_compiler, require_interpreter

from . import launches
from .report import Report

PHASES = {1: "environment and ceilings", 2: "kernels", 3: "launch contract", 4: "plugin chain"}
# seconds per phase on an H100 (<= 6 minutes in all); a CPU stand-in gets the same shares of its --budget
BUDGET_SHARES = {1: 0.08, 2: 0.36, 3: 0.25, 4: 0.31}
GPU_BUDGET_S = 330.0


def choose_device(cpu_smoke: bool | None) -> str:
    """"cuda" where torch sees a GPU (unless cpu_smoke), else "cpu"; fixes how Triton runs in this process
    (compiled for the GPU, or the interpreter) before anything imports it."""
    import torch

    device = "cpu" if cpu_smoke or not torch.cuda.is_available() else "cuda"
    if cpu_smoke is False and device == "cpu":
        raise MixtralTrtError("device-check --gpu: no CUDA device is visible to torch")
    require_compiler() if device == "cuda" else require_interpreter()
    return device


def default_launch_dir() -> Path:
    return Path(__file__).resolve().parents[2] / launches.DEFAULT_DIR


def run_device_check(out: str | Path, cpu_smoke: bool | None = None, launch_dir: str | Path | None = None,
                     phases: tuple[int, ...] = tuple(PHASES), budget_s: float | None = None) -> dict[str, Any]:
    """Run the phases into OUT/device_check.json (+ device_check.png); returns the report. `cpu_smoke` True: CPU
    stand-ins even with a GPU; None: automatic; False: a GPU is required."""
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise MixtralTrtError(f"--phases: no phase {unknown[0]} (phases: {', '.join(map(str, PHASES))})")
    device = choose_device(cpu_smoke)
    budget_s = budget_s or (GPU_BUDGET_S if device == "cuda" else 900.0)
    report = Report(out, device, budget_s)
    budgets = {p: round(budget_s * share, 1) for p, share in BUDGET_SHARES.items()}
    ceilings, warm = None, None
    if 1 in phases:
        from .ceilings import run_phase

        with report.phase(PHASES[1], budgets[1], device) as phase:
            ceilings = run_phase(phase, device)
    if device == "cuda" and ({2, 3, 4} & set(phases)):
        from . import warmup

        warm = warmup.start()  # after the ceilings: other processes on the GPU would disturb them
    if 2 in phases:
        from .kernels import run_phase

        with report.phase(PHASES[2], budgets[2], device) as phase:
            if warm is not None:  # whatever is not compiled by then compiles in this process
                phase.figure("compile_warmup", warm.wait(timeout=0.5 * budgets[2]))
                warm = None
            run_phase(phase, device)
    if warm is not None:  # phase 2 did not run: stop it (it would disturb phase 4's timing)
        warm.wait(timeout=0)
    if 3 in phases:
        from .contract import run_phase

        directory = Path(launch_dir) if launch_dir else default_launch_dir()
        document, why = None, None
        if (directory / "launches.json").is_file():
            document = launches.load(directory)
        else:
            why = (f"no launch file at {directory}: record it on a CPU machine with the dev extra "
                   "(make device-check-launches) and bring the directory along")
        with report.phase(PHASES[3], budgets[3], device) as phase:
            run_phase(phase, device, document, why)
    if 4 in phases:
        from .chain import run_phase

        with report.phase(PHASES[4], budgets[4], device) as phase:
            run_phase(phase, device, ceilings)
    return report.finish()
