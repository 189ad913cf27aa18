"""How quiet the machine was during a measurement: the CPU time other processes used meanwhile.

On a shared machine a benchmark's figures are only as good as its window. `Window` reads the machine's
busy CPU time (/proc/stat) and this process's own CPU time before and after a measurement; the
difference is what everything else used, in cores (0 = quiet, 1 = one core's worth of other work).
Noise only slows a measurement down, so the best repeat of a disturbed run is still a lower bound.
"""

from __future__ import annotations

import os
import time


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (user + nice + system + irq + softirq + steal)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Window:
    """`with Window() as w: ...` then `w.seconds` (wall) and `w.other_cores` (None where /proc is absent)."""

    def __enter__(self) -> Window:
        self._busy, self._own, self._start = machine_busy_seconds(), own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        busy = machine_busy_seconds()
        if busy is None or self._busy is None or self.seconds <= 0:
            self.other_cores = None
        else:
            others = (busy - self._busy) - (own_seconds() - self._own)
            self.other_cores = max(0.0, others) / self.seconds
