"""The install plans read from pyproject.toml: `make test` gets the CPU stand-ins for TensorRT, a GPU install
never does, and no plan asks for two distributions that write one package folder. Checked on the declared
requirement sets (a dry-run resolve of the `gpu` extra needs NVIDIA's index, out of reach here), with the
installed wheels' own metadata as the oracle for what they require."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mixtral_trt.bench import install_plan
from mixtral_trt.common.errors import MixtralTrtError

STANDINS = {"tensorrt-rtx-cu13", "tensorrt-cu13-bindings"}


def names(reqs) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def test_the_test_install_has_the_standins_and_a_gpu_install_never_does():
    assert names(install_plan.requirements(("dev", "trt-cpu"))) >= STANDINS
    assert not STANDINS & names(install_plan.requirements(("dev",)))
    for extras in (("gpu",), ("gpu", "dev")):
        plan = install_plan.gpu_plan(extras)
        assert not STANDINS & names(plan), extras
        assert {"tensorrt", "onnxruntime-gpu"} <= names(plan) and "onnxruntime" not in names(plan), extras
        assert install_plan.folder_conflicts(plan) == [], extras


def test_the_makefile_installs_the_standins_for_tests_and_the_plan_for_gpus():
    makefile = (install_plan.PYPROJECT.parent / "Makefile").read_text()
    assert '-e ".[dev,trt-cpu,eval-harness]"' in makefile  # the install line (pip, or the lock's PIP_INSTALL)
    assert "venv --system-site-packages $(GPU_VENV)" in makefile and "pip install --no-deps -e ." in makefile
    assert "mixtral_trt.bench.install_plan gpu dev" in makefile and "trt-cpu" not in makefile.split("gpu-install:")[1]


def test_the_old_dev_extra_is_refused_as_a_gpu_plan(tmp_path):
    """What `pip install .[gpu,dev]` asked for before: the bindings stand-in beside the real tensorrt."""
    text = install_plan.PYPROJECT.read_text().replace('dev = [\n', 'dev = [\n    "tensorrt-cu13-bindings>=11.0",\n')
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(MixtralTrtError, match="pull the CPU stand-in.*tensorrt-cu13-bindings"):
        install_plan.gpu_plan(("gpu", "dev"), tmp_path / "pyproject.toml")
    reqs = install_plan.requirements(("gpu", "dev"), tmp_path / "pyproject.toml")
    assert install_plan.folder_conflicts(reqs)[0] == "tensorrt and tensorrt-cu13-bindings all install the " \
                                                      "`tensorrt_bindings` folder"
    with pytest.raises(MixtralTrtError, match="'trt-cpu' extra holds CPU stand-ins"):
        install_plan.gpu_plan(("gpu", "trt-cpu"))
    with pytest.raises(MixtralTrtError, match="no extra 'gpus'"):
        install_plan.requirements(("gpus",))


def test_nothing_in_a_gpu_plan_requires_the_cpu_onnxruntime():
    """Oracle: the requirements of the installed wheels (this venv holds the dev extra)."""
    for req in install_plan.gpu_plan(("gpu", "dev")):
        try:
            needs = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # the gpu extra's own wheels are not installed here
        hard = [Requirement(r) for r in needs if "extra ==" not in r]
        assert "onnxruntime" not in names(hard), f"{req.name} requires the CPU onnxruntime: {needs}"
    assert "onnxruntime" in names(Requirement(r) for r in importlib.metadata.requires("onnxruntime-genai"))


def test_the_onnxruntime_gpu_pin_exists_on_pypi_and_admits_the_cuda_qmoe_floor():
    from mixtral_trt.common.ort_versions import CUDA_QMOE_MIN, NEWEST_ONNXRUNTIME_GPU

    (pin,) = [r for r in install_plan.gpu_plan(("gpu",)) if canonicalize_name(r.name) == "onnxruntime-gpu"]
    assert pin.specifier.contains(NEWEST_ONNXRUNTIME_GPU)
    assert not pin.specifier.contains("1.30.0") and Version(NEWEST_ONNXRUNTIME_GPU).release[:2] >= CUDA_QMOE_MIN


def test_the_module_prints_the_plan_and_fails_in_one_line():
    ok = subprocess.run([sys.executable, "-m", "mixtral_trt.bench.install_plan", "gpu", "dev"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "onnxruntime-gpu>=1.31.1" in ok.stdout.splitlines(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "mixtral_trt.bench.install_plan", "gpu", "trt-cpu"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
