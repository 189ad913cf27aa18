"""The device-check report: one JSON document rewritten (atomically) after every phase, so a run cut short
still reports, and a PNG of the figures when matplotlib is importable.

    {"format", "started", "machine": "cuda" | "cpu", "cpu_stand_ins": [phase, ...], "gpu_executed", "note",
     "budget_s",
     "phases": {name: {"status": passed|failed|skipped|error|running, "ran_on", "seconds", "budget_s",
                       "ran": [...], "skipped": [{"what", "why"}], "figures": {...}, "checks": [...]}},
     "passed", "plot"}

A check is {"what", "value", "target", "passed"}: a figure against its stated tolerance or target.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mixtral_trt.common.fileio import atomic_file

from .plot import save_plot

FORMAT = "mixtral-trt.device-check/1"
JSON_NAME, PLOT_NAME = "device_check.json", "device_check.png"


class PhaseBudget:
    """A phase's own time budget: `left()` seconds remain; work items check it and record what they skipped."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


class Phase:
    """What one phase ran, skipped (and why), measured and checked."""

    def __init__(self, record: dict[str, Any], budget: PhaseBudget) -> None:
        self.record, self.budget = record, budget

    def ran(self, what: str) -> None:
        self.record["ran"].append(what)

    def skip(self, what: str, why: str) -> None:
        self.record["skipped"].append({"what": what, "why": why})

    def figure(self, key: str, value: Any) -> None:
        self.record["figures"][key] = value

    def check(self, what: str, value: float | int | None, target: str, passed: bool, **detail: Any) -> bool:
        self.record["checks"].append({"what": what, "value": value, "target": target, "passed": bool(passed),
                                      **detail})
        return bool(passed)

    def out_of_time(self, what: str) -> bool:
        """True (and `what` recorded as skipped) when the phase's budget is spent."""
        if self.budget.left() > 0:
            return False
        self.skip(what, f"the phase's time budget ({self.budget.seconds:.0f} s) is spent")
        return True


class Report:
    def __init__(self, out_dir: str | Path, machine: str, budget_s: float) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {
            "format": FORMAT, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
            "cpu_stand_ins": [], "gpu_executed": machine == "cuda",
            "note": None if machine == "cuda" else "no CUDA device: every phase ran on CPU stand-ins (the Triton "
            "interpreter at tiny shapes, the recorded launches of the tiny layers, no driver launch, no GPU timing)",
            "budget_s": budget_s, "phases": {}, "passed": None, "plot": None}

    @property
    def json_path(self) -> Path:
        return self.dir / JSON_NAME

    @contextmanager
    def phase(self, name: str, budget_s: float, ran_on: str) -> Iterator[Phase]:
        """Run a phase: its record is written as `running` first, then with its outcome; an exception fails the
        phase (recorded with its traceback), not the run."""
        record = {"status": "running", "ran_on": ran_on, "budget_s": budget_s, "seconds": None, "ran": [],
                  "skipped": [], "figures": {}, "checks": []}
        self.data["phases"][name] = record
        if ran_on != "cuda":
            self.data["cpu_stand_ins"].append(name)
        self.write()
        phase, start = Phase(record, PhaseBudget(budget_s)), time.perf_counter()
        try:
            yield phase
        except Exception as e:  # recorded: the next phase still runs
            record["status"] = "error"
            record["error"] = f"{type(e).__name__}: {e}"
            record["traceback"] = traceback.format_exc(limit=12)
        else:
            if record["status"] == "running":
                failed = any(not c["passed"] for c in record["checks"])
                record["status"] = "failed" if failed else ("passed" if record["ran"] else "skipped")
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.write()

    def finish(self) -> dict[str, Any]:
        statuses = [p["status"] for p in self.data["phases"].values()]
        self.data["passed"] = all(s in ("passed", "skipped") for s in statuses) and "passed" in statuses
        self.data["plot"] = self._plot()
        self.write()
        return self.data

    def write(self) -> None:
        with atomic_file(self.json_path) as f:
            f.write(json.dumps(self.data, indent=2, default=str) + "\n")

    def _plot(self) -> str:
        """The PNG's file name, or why there is none."""
        try:
            import matplotlib
        except ImportError:
            return "not written: matplotlib is not importable here"
        matplotlib.use("Agg")

        return save_plot(self.data, self.dir / PLOT_NAME)
