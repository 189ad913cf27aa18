"""Drive TensorRT's plugin layer the way TensorRT's builder drives an AOT quick-deployable plugin, for every
plugin node of a `trt`-lowered ONNX graph, in graph order:

  creator lookup in the plugin registry (op_type, plugin_version, plugin_namespace) -> fields from the node's
  attributes in the creator's field order, INT attributes as INT32 (the ONNX parser's loadFields) ->
  create_plugin(..., BUILD, STRICT_AOT for aot=1) -> get_output_data_types -> get_output_shapes (symbolic
  input shapes: graph inputs' named sizes, constants, upstream plugins' output expressions) ->
  get_supported_format_combinations (the network's types must be one of them) -> configure_plugin ->
  get_valid_tactics -> per tactic: set_tactic, get_launch_params, get_kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from support.tensorrt_standin import SymbolicDim, SymbolicExprBuilder


@dataclass
class LaunchParams:
    """Receives get_launch_params' launch dimensions (TensorRT's IKernelLaunchParams)."""

    grid_x: Any = None
    grid_y: Any = None
    grid_z: Any = None
    block_x: Any = None
    block_y: Any = None
    block_z: Any = None
    shared_mem: Any = None


class SymExprs:
    """Receives get_launch_params' scalar kernel arguments (TensorRT's ISymExprs)."""

    def __init__(self) -> None:
        self.exprs: list = []

    @property
    def nbSymExprs(self) -> int:  # noqa: N802  (TensorRT's name)
        return len(self.exprs)

    @nbSymExprs.setter
    def nbSymExprs(self, n: int) -> None:  # noqa: N802
        self.exprs = [None] * n

    def __setitem__(self, i: int, value) -> None:
        self.exprs[i] = value


@dataclass
class KernelLaunch:
    """One AOT kernel as TensorRT would bake it into the plan (expressions evaluate at concrete sizes)."""

    tactic: int
    kernel_name: str
    ptx: str
    grid: tuple[SymbolicDim, SymbolicDim, SymbolicDim]
    block: tuple[SymbolicDim, SymbolicDim, SymbolicDim]
    shared_mem: SymbolicDim
    extra_args: list[SymbolicDim]
    arg_types: list[Any]  # PluginArgDataType of each extra argument

    def at(self, sizes: dict[str, int]) -> dict[str, Any]:
        ev = [[e.evaluate(sizes) for e in part] for part in (self.grid, self.block, self.extra_args)]
        return {"grid": tuple(ev[0]), "block": tuple(ev[1]), "shared_mem": self.shared_mem.evaluate(sizes),
                "extra_args": tuple(ev[2])}


@dataclass
class PluginNode:
    node: str
    op_type: str
    attributes: dict[str, int]
    input_types: list[Any]
    output_types: list[Any]
    input_shapes: list[list[SymbolicDim]]
    output_shapes: list[list[SymbolicDim]]
    supported: list[tuple]  # each: tuple of (type, format) per I/O
    tactics: list[int]
    launches: list[KernelLaunch] = field(default_factory=list)


IR_TO_TRT = {"FLOAT": "float32", "FLOAT16": "float16", "BFLOAT16": "bfloat16", "INT32": "int32", "INT64": "int64",
             "UINT8": "uint8", "INT8": "int8", "BOOL": "bool"}


def trt_dtype(trt, value: ir.Value):
    """The type TensorRT's ONNX parser gives `value`: UINT8 initializers become INT32 tensors of the same shape
    (onnx-tensorrt's weight import; TensorRT-RTX logs "UINT8 data ... is being converted to INT32")."""
    if value.dtype == ir.DataType.UINT8 and value.const_value is not None:
        return trt.int32
    return getattr(trt, IR_TO_TRT[value.dtype.name])


def _dynamic_desc(trt, dtype, dims: list[int], bounds: list[list[int]] | None = None):
    """`bounds`: the profile's (min, opt, max) dims; None: the dims themselves (-1 where dynamic)."""
    d = trt.DynamicPluginTensorDesc()
    d.desc.type, d.desc.format = dtype, trt.TensorFormat.LINEAR
    d.desc.dims = trt.Dims(dims)
    d.min, d.opt, d.max = (trt.Dims(b) for b in bounds) if bounds else (trt.Dims(dims),) * 3
    return d


def drive(trt, model: ir.Model, domain: str = "trt.plugins", profile: dict[str, tuple[int, int, int]] | None = None
          ) -> list[PluginNode]:
    """Every plugin node of `model` through the plugin layer; graph inputs' symbolic dims become named sizes.
    `profile`: each named size's (min, opt, max), as an optimization profile gives them to `autotune`."""
    builder = SymbolicExprBuilder(trt)
    registry = trt.get_plugin_registry()
    shapes: dict[str, list[SymbolicDim]] = {}
    types: dict[str, Any] = {}

    def value_shape(v: ir.Value) -> list[SymbolicDim]:
        if v.name in shapes:
            return shapes[v.name]
        return [builder.constant(d) if isinstance(d, int) else builder.symbol(str(d)) for d in v.shape]

    out = []
    for node in model.graph:
        if node.domain != domain:
            continue
        attrs = {k: a.value for k, a in node.attributes.items()}
        namespace, version = attrs["plugin_namespace"], attrs["plugin_version"]
        creator = registry.get_creator(node.op_type, version, namespace)
        if creator is None:
            raise LookupError(f"{node.name}: no plugin creator {namespace}::{node.op_type} v{version} registered")
        fields = []
        for f in creator.field_names:
            if f.name not in attrs:
                raise KeyError(f"{node.name}: attribute {f.name!r} of {node.op_type} missing from the node")
            fields.append(trt.PluginField(f.name, np.array([attrs[f.name]], np.int32), trt.PluginFieldType.INT32))
        request = trt.QuickPluginCreationRequest.STRICT_AOT if attrs.get("aot") else \
            trt.QuickPluginCreationRequest.STRICT_JIT
        plugin = creator.create_plugin(node.op_type, namespace, trt.PluginFieldCollection(fields),
                                       trt.TensorRTPhase.BUILD, request)
        if not isinstance(plugin, trt.IPluginV3QuickAOTBuild):
            raise TypeError(f"{node.name}: {node.op_type} was not created as an AOT plugin")

        in_types = [types[v.name] if v.name in types else trt_dtype(trt, v) for v in node.inputs]
        in_shapes = [value_shape(v) for v in node.inputs]
        out_types = list(plugin.get_output_data_types(in_types, [len(s) for s in in_shapes]))
        inputs = []
        for s in in_shapes:
            dims = trt.DimsExprs(len(s))
            for i, e in enumerate(s):
                dims[i] = e
            inputs.append(dims)
        out_shapes = [list(d) for d in plugin.get_output_shapes(inputs, [], builder)]
        for v, t, s in zip(node.outputs, out_types, out_shapes, strict=True):
            types[v.name], shapes[v.name] = t, s

        def concrete(s):
            return [e.get_constant_value() if e.is_constant() else -1 for e in s]

        def bounds(s):
            return [[e.evaluate({k: v[i] for k, v in profile.items()}) for e in s] for i in range(3)] if profile \
                else None

        in_descs = [_dynamic_desc(trt, t, concrete(s), bounds(s)) for t, s in zip(in_types, in_shapes, strict=True)]
        out_descs = [_dynamic_desc(trt, t, concrete(s), bounds(s)) for t, s in zip(out_types, out_shapes,
                                                                                   strict=True)]
        flat = list(plugin.get_supported_format_combinations(in_descs + out_descs, len(in_descs)))
        n = len(in_descs) + len(out_descs)
        supported = [tuple((d.type, d.format) for d in flat[i:i + n]) for i in range(0, len(flat), n)]
        wanted = tuple((t, trt.TensorFormat.LINEAR) for t in in_types + out_types)
        record = PluginNode(node.name, node.op_type, {f.name: attrs[f.name] for f in creator.field_names}, in_types,
                            out_types, in_shapes, out_shapes, supported, [])
        out.append(record)
        if wanted not in supported:
            continue  # the builder would fail here: the caller reports it
        plugin.configure_plugin(in_descs, out_descs)
        record.tactics = list(plugin.get_valid_tactics()) or [0]
        for tactic in record.tactics:
            plugin.set_tactic(tactic)
            params, args = LaunchParams(), SymExprs()
            plugin.get_launch_params(inputs, in_descs + out_descs, len(in_descs), params, args, builder)
            name, ptx = plugin.get_kernel([d.desc for d in in_descs], [d.desc for d in out_descs])
            record.launches.append(KernelLaunch(
                tactic, name.decode() if isinstance(name, bytes) else name,
                ptx.decode() if isinstance(ptx, bytes) else ptx,
                (params.grid_x.expr, params.grid_y.expr, params.grid_z.expr),
                (params.block_x.expr, params.block_y.expr, params.block_z.expr), params.shared_mem.expr,
                [a.expr for a in args.exprs], [a.dtype for a in args.exprs]))
    return out

