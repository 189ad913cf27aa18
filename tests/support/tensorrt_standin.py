"""A `tensorrt` module for CPU tests: TensorRT-RTX's compiled bindings stand in for TensorRT's, and TensorRT's
own pure-Python plugin layer (`tensorrt.plugin`, shipped in the tensorrt-cu13-bindings wheel, whose compiled
module needs libnvinfer and is never imported) is loaded on top of them, unmodified.

Where each name the plugin layer uses comes from:

- TensorRT-RTX (compiled, the same C++ declarations as TensorRT's): DataType, DimensionOperation, Dims,
  PluginField, PluginFieldCollection, PluginFieldType, PluginTensorDesc, DynamicPluginTensorDesc, TensorFormat,
  TensorRTPhase, Logger, the IPluginV3* and IPluginCreatorV3Quick base classes, and the plugin registry the
  plugin layer registers its creators in (`get_plugin_registry`).
- Not in TensorRT-RTX (it has no AOT Python plugins), defined here with TensorRT's members and values
  (NvInferPythonPlugin.h): QuickPluginCreationRequest, PluginArgType, PluginArgDataType, ISymExpr,
  IPluginV3QuickAOTBuild. Their presence is what makes the plugin layer define its AOT classes.
- Replaced here: IDimensionExpr, IExprBuilder and DimsExprs. TensorRT-RTX's expression builder exists only
  inside builder callbacks (a default-constructed one crashes) and its network API has no plugin layers, so no
  RTX builder ever calls a Python plugin. `SymbolicExprBuilder` builds the same expressions as Python objects
  (constants folded, as TensorRT folds them) that evaluate at concrete sizes.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import operator
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path


class QuickPluginCreationRequest(enum.IntEnum):
    UNKNOWN = 0
    PREFER_JIT = 1
    PREFER_AOT = 2
    STRICT_JIT = 3
    STRICT_AOT = 4


class PluginArgType(enum.IntEnum):
    INT = 0


class PluginArgDataType(enum.IntEnum):
    INT8 = 0
    INT16 = 1
    INT32 = 2


class ISymExpr:
    """A scalar kernel argument or launch dimension: `type`, `dtype` and `expr` (an IDimensionExpr)."""

    def __init__(self) -> None:
        self.type = self.dtype = self.expr = None


class IPluginV3QuickAOTBuild:
    """Marker base class of AOT plugins (the methods are the plugin layer's own)."""

    def __init__(self) -> None:
        pass


class SymbolicDim:
    """Stands in for trt.IDimensionExpr: a constant, a named size, or an operation on two of them."""

    def __init__(self, evaluate: Callable[[Mapping[str, int]], int], text: str, value: int | None = None) -> None:
        self._evaluate, self._text, self._value = evaluate, text, value

    def is_constant(self) -> bool:
        return self._value is not None

    def get_constant_value(self) -> int:
        if self._value is None:
            raise ValueError(f"{self._text} is not a build-time constant")
        return self._value

    def is_size_tensor(self) -> bool:
        return False

    def evaluate(self, sizes: Mapping[str, int]) -> int:
        return self._evaluate(sizes)

    def __repr__(self) -> str:
        return self._text


class DimsExprs(list):
    """Stands in for trt.DimsExprs: `DimsExprs(n)` holds n expressions."""

    def __init__(self, n: int = 0) -> None:
        super().__init__([None] * n)


def _operations(trt_rtx) -> dict:
    op = trt_rtx.DimensionOperation
    return {op.SUM: ("+", operator.add), op.PROD: ("*", operator.mul), op.MAX: ("max", max),
            op.MIN: ("min", min), op.SUB: ("-", operator.sub), op.EQUAL: ("==", lambda a, b: int(a == b)),
            op.LESS: ("<", lambda a, b: int(a < b)), op.FLOOR_DIV: ("//", operator.floordiv),
            op.CEIL_DIV: ("cdiv", lambda a, b: -(-a // b))}


class SymbolicExprBuilder:
    """Stands in for trt.IExprBuilder (constant, operation) and names the dynamic sizes (`symbol`)."""

    def __init__(self, trt_rtx) -> None:
        self._ops = _operations(trt_rtx)

    def constant(self, value: int) -> SymbolicDim:
        value = int(value)
        return SymbolicDim(lambda sizes: value, str(value), value)

    def symbol(self, name: str) -> SymbolicDim:
        return SymbolicDim(lambda sizes: sizes[name], name)

    def operation(self, op, a: SymbolicDim, b: SymbolicDim) -> SymbolicDim:
        name, fn = self._ops[op]
        text = f"{name}({a}, {b})" if name.isalpha() else f"({a} {name} {b})"
        if a.is_constant() and b.is_constant():
            value = fn(a.get_constant_value(), b.get_constant_value())
            return SymbolicDim(lambda sizes: value, str(value), value)
        return SymbolicDim(lambda sizes: fn(a.evaluate(sizes), b.evaluate(sizes)), text)

    def declare_size_tensor(self, *args):
        raise NotImplementedError("size tensors (data-dependent shapes) are not used by these plugins")


def plugin_layer_dir() -> Path | None:
    """tensorrt_bindings/plugin/ of the installed tensorrt-cu13-bindings wheel, found without importing it."""
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "plugin"
    return path if (path / "__init__.py").is_file() else None


def _tensorrt_module() -> types.ModuleType:
    import tensorrt_rtx

    trt = types.ModuleType("tensorrt", __doc__)
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__dict__.update({k: v for k, v in vars(tensorrt_rtx).items() if not k.startswith("__")})
    # the version of the plugin layer loaded on top (what the registrations are checked against)
    provider = importlib.metadata.packages_distributions().get("tensorrt_bindings", ["tensorrt-cu13-bindings"])[0]
    trt.__version__ = importlib.metadata.version(provider)  # tensorrt-cu13-bindings (or -cu12-) 11.4.0.106
    for cls in (QuickPluginCreationRequest, PluginArgType, PluginArgDataType, ISymExpr, IPluginV3QuickAOTBuild):
        setattr(trt, cls.__name__, cls)
    trt.IDimensionExpr, trt.DimsExprs, trt.IExprBuilder = SymbolicDim, DimsExprs, SymbolicExprBuilder
    return trt


def _swapped(modules: dict[str, types.ModuleType]):
    """Put `modules` in sys.modules in place of every tensorrt* entry; returns the entries to restore."""
    saved = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    for k in saved:
        del sys.modules[k]
    sys.modules.update(modules)
    return saved


@functools.cache
def _load() -> tuple[types.ModuleType, types.ModuleType, dict[str, types.ModuleType]]:
    """The stand-in and TensorRT's plugin layer, loaded once per process: the plugin registry they register in
    (TensorRT-RTX's) is process-wide, so a second copy of the layer would meet the first one's creators."""
    directory = plugin_layer_dir()
    if directory is None:
        raise ImportError("tensorrt-cu13-bindings (TensorRT's plugin layer) is not installed")
    trt = _tensorrt_module()
    spec = importlib.util.spec_from_file_location("tensorrt.plugin", directory / "__init__.py",
                                                  submodule_search_locations=[str(directory)])
    plugin = importlib.util.module_from_spec(spec)
    trt.plugin = plugin
    saved = _swapped({"tensorrt": trt, "tensorrt.plugin": plugin})
    try:
        spec.loader.exec_module(plugin)  # imports its submodules as tensorrt.plugin._lib, ...
        layer = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    finally:
        _swapped(saved)
    return trt, plugin, layer


@contextlib.contextmanager
def installed() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """Inside the block, `import tensorrt` / `import tensorrt.plugin` give the stand-in and TensorRT's plugin layer;
    whatever was in sys.modules before comes back after it (nothing else sees the stand-in). The loaded layer
    keeps working outside the block: its modules hold their own reference to the stand-in."""
    trt, plugin, layer = _load()
    saved = _swapped(layer)
    try:
        yield trt, plugin
    finally:
        _swapped(saved)
