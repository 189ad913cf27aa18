"""A minimal stand-in of `tensorrt` and `tensorrt.plugin` with concrete sizes: enough for the registrations of
plugins/trt_registry.py to define themselves and for each `aot_impl` to run as TensorRT's builder calls it
(input descriptors, every attribute in registration order, output descriptors, tactic), on a machine without
TensorRT. Its `aot_impl` compiles for this machine's GPU and driver (aot.compile_variant), as in a real build.

Sizes are plain ints (every shape expression is a constant); dtypes are TensorRT's DataType names."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from mixtral_trt.plugins import trt_registry


class Size(int):
    """A shape expression that is a build-time constant (TensorRT's ShapeExpr of a known size)."""

    is_constant = True

    def constant_value(self) -> int:
        return int(self)

    # arithmetic on shape expressions gives shape expressions (aot_impl checks sizes derived this way)
    def __add__(self, other: int) -> Size:
        return Size(int(self) + int(other))

    def __sub__(self, other: int) -> Size:
        return Size(int(self) - int(other))

    def __mul__(self, other: int) -> Size:
        return Size(int(self) * int(other))

    def __floordiv__(self, other: int) -> Size:
        return Size(int(self) // int(other))

    __radd__, __rmul__ = __add__, __mul__


class TensorDesc:
    def __init__(self, shape: list[int], dtype: str) -> None:
        self.shape_expr, self.dtype = tuple(Size(d) for d in shape), dtype


class KernelLaunchParams:
    def __init__(self) -> None:
        self.grid_x = self.grid_y = self.grid_z = 1
        self.block_x = self.block_y = self.block_z = 1
        self.shared_mem = 0


class SymIntExprs(list):
    @classmethod
    def from_tuple(cls, values) -> SymIntExprs:
        return cls(values)


class AutoTuneCombination:
    def __init__(self, types_: str) -> None:
        self.types, self.tactic_list = types_, []

    def tactics(self, values: list[int]) -> None:
        self.tactic_list = list(values)


def modules() -> tuple[types.ModuleType, types.ModuleType, dict[str, dict[str, Callable]]]:
    """(trt, trtp, {plugin id: {"register" | "autotune" | "aot_impl" | "impl": function}})."""
    defined: dict[str, dict[str, Callable]] = {}
    trt = types.SimpleNamespace(float32="FLOAT", float16="HALF", bfloat16="BF16", int32="INT32",
                                __version__="stand-in")

    def decorator(kind: str):
        def named(plugin_id: str):
            def keep(fn):
                defined.setdefault(plugin_id, {})[kind] = fn
                return fn
            return keep
        return named

    trtp = types.SimpleNamespace(
        TensorDesc=TensorDesc, KernelLaunchParams=KernelLaunchParams, SymIntExprs=SymIntExprs,
        AutoTuneCombination=AutoTuneCombination, SymInt32=int, cdiv=lambda a, b: -(-int(a) // int(b)),
        from_shape_expr=lambda shape, dtype: TensorDesc(list(shape), dtype),
        register=decorator("register"), autotune=decorator("autotune"), aot_impl=decorator("aot_impl"),
        impl=decorator("impl"))
    return trt, trtp, defined


def define_all() -> dict[str, dict[str, Callable]]:
    """Every registration of plugins/trt_registry.py, defined against the stand-in."""
    trt, trtp, defined = modules()
    for define in trt_registry._definitions().values():
        define(trt, trtp)
    return defined


def aot_launch(defined: dict[str, dict[str, Callable]], node: dict[str, Any], at: dict[str, Any], tactic: int
               ) -> dict[str, Any]:
    """aot_impl of a recorded node at one size: {"symbol", "ptx", "grid", "block", "shared_mem", "scalars"}."""
    fn = defined[f"mixtral::{node['op_type']}"]["aot_impl"]
    ins = [TensorDesc(s, i["dtype"]) for s, i in zip(at["input_shapes"], node["inputs"], strict=True)]
    outs = [TensorDesc(s, o["dtype"]) for s, o in zip(at["output_shapes"], node["outputs"], strict=True)]
    name, ptx, params, args = fn(*ins, *node["attributes"].values(), outs, tactic)
    return {"symbol": name.decode() if isinstance(name, bytes) else name,
            "ptx": ptx.decode() if isinstance(ptx, bytes) else ptx,
            "grid": [int(params.grid_x), int(params.grid_y), int(params.grid_z)],
            "block": [int(params.block_x), int(params.block_y), int(params.block_z)],
            "shared_mem": int(params.shared_mem), "scalars": [int(a) for a in args]}
