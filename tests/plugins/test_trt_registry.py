"""What register_plugins() guarantees besides the definitions themselves (those: test_trt_plugin_layer.py): the
TensorRT versions it accepts (and pyproject's `gpu` extra agrees), a failed definition is reported again, never
half-retried, and the autotune types come from the plugin specs; each plugin is one folder, and no file TensorRT's
plugin layer inspects has string annotations."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.plugins import PLUGINS, trt_registry
from mixtral_trt.plugins.aot import default_variants
from mixtral_trt.plugins.trt_common import autotune_types

PLUGINS_DIR = Path(trt_registry.__file__).parent

# every TensorRT release on PyPI from 10.7 on (`pip index versions tensorrt`), and whether the plugins accept it
RELEASES = {"10.7.0": False, "10.8.0.43": False, "10.9.0.34": True, "10.13.3.9": True, "10.16.1.11": True,
            "11.0.0.114": True, "11.1.0.106": False, "11.2.1.2": False, "11.3.0.99": True, "11.4.0.106": True}


@pytest.mark.parametrize(("version", "accepted"), RELEASES.items())
def test_tensorrt_versions(version, accepted):
    if accepted:
        trt_registry.check_tensorrt(version)
    else:
        with pytest.raises(MixtralTrtError, match="10.9 or newer|NVIDIA/TensorRT#4849"):
            trt_registry.check_tensorrt(version)


def test_the_gpu_extra_installs_only_accepted_tensorrt_versions():
    requirements = [Requirement(r) for r in importlib.metadata.requires("mixtral-trt")]
    tensorrt = next(r for r in requirements
                    if r.name == "tensorrt" and r.marker and r.marker.evaluate({"extra": "gpu"}))
    allowed = {v for v in RELEASES if tensorrt.specifier.contains(v)}
    assert allowed == {v for v, ok in RELEASES.items() if ok}, f"{tensorrt}: {sorted(allowed)}"


@pytest.fixture
def fake_layer(monkeypatch):
    """A `tensorrt` + `tensorrt.plugin` pair of empty modules, and definitions that record their calls; the
    second one fails."""
    trt, plugin = types.ModuleType("tensorrt"), types.ModuleType("tensorrt.plugin")
    trt.__version__, trt.plugin = "11.4.0.106", plugin
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", plugin)
    calls = []

    def define(name, fail=False):
        def run(trt_module, trtp):
            calls.append(name)
            if fail:
                raise ValueError(f"{name}: no return annotation")
        return run

    monkeypatch.setattr(trt_registry, "_definitions",
                        lambda: {"A": define("A"), "B": define("B", fail=True), "C": define("C")})
    return calls


def test_a_failed_definition_is_reported_again_not_retried(fake_layer):
    with pytest.raises(MixtralTrtError, match=r"mixtral::B could not be registered: ValueError: B: no return"):
        trt_registry.register_plugins()
    with pytest.raises(MixtralTrtError, match=r"mixtral::B failed to register earlier .*B: no return"):
        trt_registry.register_plugins()
    assert fake_layer == ["A", "B"]  # A is not redefined (TensorRT would refuse: "already has a definition")


def test_an_old_tensorrt_is_refused_before_any_definition(fake_layer):
    sys.modules["tensorrt"].__version__ = "10.8.0.43"
    with pytest.raises(MixtralTrtError, match="10.9 or newer"):
        trt_registry.register_plugins()
    assert fake_layer == []


F = "FP32|FP16|BF16"
AUTOTUNE = {  # what TensorRT is offered, written out by hand; codes: INT32 elements packing the bytes
    "MoERouter": f"{F}, FP32, INT32",
    "MoEAlign": "INT32, INT32, INT32, INT32",
    "MoEGemmSwiGLU": f"{F}, INT32, INT32, INT32, {F}, {F}",
    "MoEGemmDown": f"{F}, INT32, INT32, INT32, FP32, {F}, FP32",
    "MoEGemmSwiGLUQ": f"{F}, INT32, INT32, INT32, INT32, {F}, {F}",
    "MoEGemmDownQ": f"{F}, INT32, INT32, INT32, FP32, INT32, {F}, FP32",
    # + zero points (INT32 words packing the bytes) and, SwiGLU, the input order (INT32)
    "MoEGemmSwiGLUQZ": f"{F}, INT32, INT32, INT32, INT32, {F}, INT32, INT32, {F}",
    "MoEGemmDownQZ": f"{F}, INT32, INT32, INT32, FP32, INT32, {F}, INT32, FP32",
    # FP8 e4m3 bytes (INT32 words packing them) and one scale per row: the Q plugins' inputs
    "MoEGemmSwiGLUF8": f"{F}, INT32, INT32, INT32, INT32, {F}, {F}",
    "MoEGemmDownF8": f"{F}, INT32, INT32, INT32, FP32, INT32, {F}, FP32",
}


def test_autotune_types_come_from_the_specs():
    assert {name: autotune_types(spec) for name, spec in PLUGINS.items()} == AUTOTUNE


def test_every_plugin_is_its_folder():
    """register_plugins, default_variants and register_cpu_ops find each plugin of PLUGINS in its folder: a
    `define` in trt.py, `variant` and `defaults` in aot.py, `register` in cpu.py."""
    for name, spec in PLUGINS.items():
        folder = PLUGINS_DIR / spec.folder
        assert (folder / "__init__.py").read_text().count(f'name="{name}"') == 1, f"{name}: not in {folder}"
        for part, functions in (("trt", ("define",)), ("aot", ("variant", "defaults")), ("cpu", ("register",))):
            module = spec.module(part)
            assert all(callable(getattr(module, f, None)) for f in functions), f"{name}: {part}.py lacks {functions}"
    assert {v.plugin for v in default_variants()} == set(PLUGINS)


def future_annotations(path: Path) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names)
               for node in ast.walk(ast.parse(path.read_text(), str(path))))


def test_no_string_annotations_where_tensorrt_looks():
    """TensorRT's plugin layer reads the annotations of `register` / `aot_impl` as classes: every plugin's
    trt.py and the helpers they annotate with (trt_common.py) must not turn them into strings."""
    inspected = [PLUGINS_DIR / spec.folder / "trt.py" for spec in PLUGINS.values()]
    inspected += [PLUGINS_DIR / "trt_common.py", PLUGINS_DIR / "trt_registry.py"]
    assert all(path.is_file() for path in inspected)
    offending = [str(path.relative_to(PLUGINS_DIR)) for path in inspected if future_annotations(path)]
    assert not offending, f"`from __future__ import annotations` where TensorRT inspects annotations: {offending}"
    assert future_annotations(PLUGINS_DIR / "spec.py")  # the check sees the import where it is
