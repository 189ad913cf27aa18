"""Peak resident memory of `mixtral-export export`, measured in a child process.

The child reports its own VmHWM (peak RSS of its address space) at exit. `ru_maxrss` would be wrong
here: Linux carries the parent's peak across fork + exec, so a child of a large process inherits it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportMemory:
    checkpoint_bytes: int
    peak_rss_bytes: int
    seconds: float
    bound_bytes: int  # 0.25 x checkpoint + 1.5 GiB

    @property
    def within_bound(self) -> bool:
        return self.peak_rss_bytes <= self.bound_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "within_bound": self.within_bound}


def checkpoint_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))


_REPORT_HWM = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    kib = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "    print(f'{MARK}{kib}', file=sys.stderr)\n"
    "atexit.register(_hwm)\n"
    "from mixtral_trt.cli import main\n"
    "main()\n"
)
MARK = "mixtral-trt-vmhwm-kib="


def measure_export(checkpoint: Path, out: Path, dtype: str = "bf16", extra: tuple[str, ...] = ()) -> ExportMemory:
    code = _REPORT_HWM.replace("{MARK}", MARK)
    cmd = [sys.executable, "-c", code, "export", str(checkpoint), str(out), "--dtype", dtype, "--force", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"export failed: {proc.stderr.strip()[-500:]}")
    peak_kib = int(proc.stderr.rsplit(MARK, 1)[1].split()[0])
    size = checkpoint_bytes(checkpoint)
    return ExportMemory(size, peak_kib * 1024, seconds, int(0.25 * size + 1.5 * (1 << 30)))
