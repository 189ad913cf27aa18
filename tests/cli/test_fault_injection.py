"""Fault injection (issue 10, acceptance): `export` of a tiny checkpoint killed with SIGKILL at random points,
10 runs, never leaves a partial OUT, and the next export leaves no stray temporary.

Each run replaces an existing OUT (--force), the hardest case: OUT must be, after every kill, byte for byte
the complete export it was. Half the kill times are drawn over the whole run (mostly during imports and
the trace), half inside the window where the temporary exists (from its appearance to the commit, measured
on a first, uninterrupted export), where a kill can actually leave debris. SIGKILL cannot be caught: what
remains is whatever the process had on disk, and the next run must clear it.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("mixtral-export"))
RUNS = 10


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _run(cmd: list[str], parent: Path, out: Path, kill_at: float | None = None, after_temporary: bool = False):
    """Run `cmd`, SIGKILL it `kill_at` s after its start (or after its temporary appeared); returns
    (exit code, seconds until the temporary appeared, seconds until OUT was committed)."""
    start, appeared, committed = time.monotonic(), None, None
    before = out.stat().st_ino if out.exists() else None
    stale = set(os.listdir(parent))  # temporaries a killed run left: not this run's
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while p.poll() is None:
        now = time.monotonic() - start
        if appeared is None and any(n.startswith(f".{out.name}.") for n in set(os.listdir(parent)) - stale):
            appeared = now
        if committed is None and out.exists() and out.stat().st_ino != before:
            committed = now
        if kill_at is not None and (now >= kill_at if not after_temporary
                                    else appeared is not None and now >= appeared + kill_at):
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    code = p.wait(timeout=120)
    assert kill_at is not None or code == 0, p.stderr.read()[-2000:]
    return code, appeared, committed


@pytest.mark.slow  # 12 exports of the tiny preset: about 2 minutes on 2 idle cores
def test_export_killed_at_random_points_never_leaves_a_partial_out(tmp_path, tiny_ckpt):
    parent = tmp_path / "parent"
    parent.mkdir()
    out = parent / "onnx"
    cmd = [CLI, "export", str(tiny_ckpt), str(out), "--max-seq", "64", "--max-batch", "2", "--force"]
    _, appeared, committed = _run(cmd, parent, out)
    reference = _digest(out)
    assert appeared is not None and committed is not None and appeared < committed
    window = committed - appeared
    rng = random.Random(1234)
    log = []
    for run in range(RUNS):
        inside = run % 2 == 1
        kill_at = rng.uniform(0, 1.2 * window) if inside else rng.uniform(0, committed)
        code, _, _ = _run(cmd, parent, out, kill_at, after_temporary=inside)
        log.append(f"run {run}: kill {'temporary + ' if inside else ''}{kill_at:.2f} s, exit {code}, "
                   f"parent {sorted(os.listdir(parent))}")
        assert out.is_dir() and _digest(out) == reference, "\n".join(log)  # never partial, never missing
    _run(cmd, parent, out)  # the next export, to the end
    assert sorted(os.listdir(parent)) == ["onnx"], "\n".join(log) + f"\nafter: {sorted(os.listdir(parent))}"
    assert _digest(out) == reference
    print("\n".join(log))
