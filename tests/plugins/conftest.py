"""The plugin kernels run under Triton's interpreter: TRITON_INTERPRET=1 before triton is imported. Ahead-of-time
compilation therefore runs in subprocesses (support/aot.py), once per session for the default sm_90a set.

Every kernel module is imported here, under the interpreter, once: the launchers import theirs lazily, and a
test that runs a launcher's GPU path (TRITON_INTERPRET unset for the call, test_trt_plugin_layer.py) would
otherwise import the ones not yet loaded as compiled kernels for the rest of the session."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from mixtral_trt.plugins.interpreter import require_interpreter
from support.aot import CUDA, compile_cli

require_interpreter()
_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
for _kernel in sorted(_PLUGINS.glob("*/kernel.py")):
    importlib.import_module(f"mixtral_trt.plugins.{_kernel.parent.name}.kernel")
importlib.import_module("mixtral_trt.plugins.dequant")


@pytest.fixture(scope="session")
def sm90a_kernels(tmp_path_factory) -> tuple[Path, dict]:
    """`plugins compile --arch sm_90a --cuda 12.8` (every default variant: Mixtral's E 8, k 2, fp32/fp16/bf16,
    float, int8 and int4): (directory, kernels.json)."""
    out = tmp_path_factory.mktemp("aot") / "sm_90a"
    result = compile_cli("--arch", "sm_90a", "--cuda", CUDA, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, json.loads((out / "kernels.json").read_text())
