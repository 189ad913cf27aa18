"""The plugin kernels run under Triton's interpreter: TRITON_INTERPRET=1 before triton is imported. Ahead-of-time
compilation therefore runs in subprocesses (support/aot.py), once per session for the default sm_90a set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_trt.plugins.interpreter import require_interpreter
from support.aot import CUDA, compile_cli

require_interpreter()


@pytest.fixture(scope="session")
def sm90a_kernels(tmp_path_factory) -> tuple[Path, dict]:
    """`plugins compile --arch sm_90a --cuda 12.8` (every default variant: Mixtral's E 8, k 2, fp32/fp16/bf16,
    float, int8 and int4): (directory, kernels.json)."""
    out = tmp_path_factory.mktemp("aot") / "sm_90a"
    result = compile_cli("--arch", "sm_90a", "--cuda", CUDA, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, json.loads((out / "kernels.json").read_text())
