"""The collectives of a rank graph: torch custom ops for the trace, TensorRT `DistCollective` in ONNX.

The trace sees `mixtral_tp::all_reduce(x)` / `mixtral_tp::all_gather(x)` and writes placeholder nodes
`mixtral_tp::AllReduce` / `AllGather`; `to_dist_collective` then rewrites them into the node TensorRT's
ONNX parser (>= 10.16) imports as an IDistCollectiveLayer, in the form NVIDIA's own sharding tool writes
(Polygraphy `multi-device shard`, polygraphy/tools/multi_device): op_type `DistCollective`, default
domain, attributes `collective_operation` (all_reduce | all_gather), `reduce_op` (sum | none), `root` -1,
`nb_rank` N, `group_size` 0 and `groups` [] (all ranks). ALL_GATHER concatenates along dimension 0.

Eagerly the ops run torch.distributed when a process group is up (tests of the rank model), and act as
a world of one otherwise.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import torch
from onnx.defs import OpSchema
from onnxscript import values

from mixtral_trt.common.tensor_parallel import Collective

PLACEHOLDER_DOMAIN = "mixtral_tp"
DIST_COLLECTIVE = "DistCollective"
NODE_PREFIX = "dist_collective."
FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_OPS = {"AllReduce": ("all_reduce", "sum"), "AllGather": ("all_gather", "none")}


@torch.library.custom_op("mixtral_tp::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum of x over the ranks."""
    import torch.distributed as dist

    y = x.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(y)
    return y


@all_reduce.register_fake
def _(x, world_size):
    return torch.empty_like(x)


@torch.library.custom_op("mixtral_tp::all_gather", mutates_args=())
def all_gather(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's x concatenated along dimension 0: [N * x.shape[0], ...]."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return x.repeat(world_size, *([1] * (x.dim() - 1)))


@all_gather.register_fake
def _(x, world_size):
    return x.new_empty((x.shape[0] * world_size, *x.shape[1:]))


def register_schemas() -> None:
    """Idempotent: the placeholders and DistCollective, so onnx.checker and the optimizer accept the nodes."""
    for name in _OPS:
        if not onnx.defs.has(name, 1, PLACEHOLDER_DOMAIN):
            onnx.defs.register_schema(OpSchema(
                name, PLACEHOLDER_DOMAIN, 1, inputs=[OpSchema.FormalParameter("x", "T")],
                outputs=[OpSchema.FormalParameter("y", "T")], type_constraints=[("T", FLOAT_TYPES, "")],
                attributes=[OpSchema.Attribute("world_size", OpSchema.AttrType.INT, "ranks")]))
    if not onnx.defs.has(DIST_COLLECTIVE, 1, ""):
        attrs = [("collective_operation", OpSchema.AttrType.STRING), ("reduce_op", OpSchema.AttrType.STRING),
                 ("root", OpSchema.AttrType.INT), ("nb_rank", OpSchema.AttrType.INT),
                 ("group_size", OpSchema.AttrType.INT), ("groups", OpSchema.AttrType.INTS)]
        onnx.defs.register_schema(OpSchema(
            DIST_COLLECTIVE, "", 1, doc="TensorRT multi-device collective over NCCL (IDistCollectiveLayer)",
            inputs=[OpSchema.FormalParameter("input", "T")], outputs=[OpSchema.FormalParameter("output", "T")],
            type_constraints=[("T", [*FLOAT_TYPES, "tensor(int32)", "tensor(int64)"], "")],
            attributes=[OpSchema.Attribute(name, kind, "", required=False) for name, kind in attrs]))


_tp = values.Opset(PLACEHOLDER_DOMAIN, 1)


def _all_reduce(x, world_size: int):
    return _tp.AllReduce(x, world_size=world_size)


def _all_gather(x, world_size: int):
    return _tp.AllGather(x, world_size=world_size)


def translation_table() -> dict:
    register_schemas()
    return {torch.ops.mixtral_tp.all_reduce.default: _all_reduce,
            torch.ops.mixtral_tp.all_gather.default: _all_gather}


def dist_collective_attributes(op: str, reduce: str, world_size: int) -> list[ir.Attr]:
    return [ir.AttrString("collective_operation", op), ir.AttrString("reduce_op", reduce), ir.AttrInt64("root", -1),
            ir.AttrInt64("nb_rank", world_size), ir.AttrInt64("group_size", 0), ir.AttrInt64s("groups", [])]


def to_dist_collective(model: ir.Model, joins: list[str]) -> None:
    """Rewrite the placeholder nodes (in graph order) into DistCollective nodes named
    `dist_collective.{joins[j]}` (what the j-th collective joins: embedding, attention.{i}, moe.{i}, logits)."""
    nodes = [n for n in model.graph if n.domain == PLACEHOLDER_DOMAIN]
    if len(nodes) != len(joins):
        raise RuntimeError(f"the rank graph has {len(nodes)} collectives, expected {len(joins)}")
    for node, after in zip(nodes, joins, strict=True):
        op, reduce = _OPS[node.op_type]
        world_size = node.attributes["world_size"].as_int()
        node.op_type, node.domain = DIST_COLLECTIVE, ""
        node.attributes.clear()
        for attr in dist_collective_attributes(op, reduce, world_size):
            node.attributes[attr.name] = attr
        node.name = f"{NODE_PREFIX}{after}"
    model.opset_imports.pop(PLACEHOLDER_DOMAIN, None)


def collectives_of(model: ir.Model) -> tuple[Collective, ...]:
    """The contract's record of the DistCollective nodes of a rank graph, in graph order."""
    return tuple(Collective(n.attributes["collective_operation"].as_string(), n.attributes["reduce_op"].as_string(),
                            n.inputs[0].name, n.outputs[0].name, n.name.removeprefix(NODE_PREFIX))
                 for n in model.graph if n.op_type == DIST_COLLECTIVE and n.domain == "")
