"""`mixtral-export plugins compile` in a fresh process: the plugin tests' own process runs Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

CUDA = "12.8"  # the driver the session's sm_90a kernels are compiled for (PTX 8.7)


def compile_cli(*args: str) -> subprocess.CompletedProcess:
    """`mixtral-export plugins compile ARGS` in a fresh process (without TRITON_INTERPRET)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "from mixtral_trt.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, "plugins", "compile", *args], capture_output=True,
                          text=True, env=env, timeout=1800)
