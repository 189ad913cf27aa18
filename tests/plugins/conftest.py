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

from mixtral_trt.plugins import cpu_kernels
from mixtral_trt.plugins.interpreter import require_interpreter
from support.aot import CUDA, compile_cli
from support.cpu_kernels import library_or_skip

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


@pytest.fixture(scope="session")
def library() -> Path:
    """The cpu_kernels library (built now, or the sanitizer build; skips where it cannot be built)."""
    return library_or_skip()


@pytest.fixture(scope="session")
def isas(library) -> list[str]:
    """The instruction sets this CPU runs the library's kernels with."""
    return cpu_kernels.supported_isas(library)


@pytest.fixture
def use_isa(isas, monkeypatch):
    """use_isa(name): force the kernels' instruction set (MIXTRAL_TRT_CPU_ISA), skipping where the CPU lacks it."""

    def use(isa: str) -> None:
        if isa not in isas:
            pytest.skip(f"this CPU does not run the {isa} path (it runs {', '.join(isas)})")
        monkeypatch.setenv(cpu_kernels.ISA_ENV, isa)

    return use
