"""Graph utilities shared by the lowerings: finding the MoE op pairs and tidying up afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnx_ir.tape
from onnx_ir.passes.common import RemoveUnusedFunctionsPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from ..ops.spec import DOMAIN, MOE_EXPERTS, MOE_EXPERTS_F8, MOE_EXPERTS_Q, MOE_EXPERTS_QZ, MOE_EXPERTS_QZP, MOE_ROUTER

EXPERT_OPS = (MOE_EXPERTS.name, MOE_EXPERTS_Q.name, MOE_EXPERTS_QZ.name, MOE_EXPERTS_QZP.name)
F8_OPS = (*EXPERT_OPS, MOE_EXPERTS_F8.name)  # what a lowering that takes MoEExpertsF8 as it is (trt) looks for
WITH_ZEROS = (MOE_EXPERTS_QZ.name, MOE_EXPERTS_QZP.name)


@dataclass(frozen=True)
class MoEPair:
    """One layer's router + experts nodes and the values a lowering needs. For quantized experts
    (MoEExpertsQ, MoEExpertsQZ, MoEExpertsQZP) `w13` / `w2` are the uint8 codes and `quant` is (bits, block_size);
    MoEExpertsQZ adds zero points (`w13_zeros` / `w2_zeros`, None otherwise), MoEExpertsQZP also each expert's
    input order of its w13 codes (`w13_order`, None otherwise). MoEExpertsF8 (`f8`): `w13` / `w2` are e4m3fn bytes,
    the scales one per row, `quant` None."""

    router: ir.Node
    experts: ir.Node
    top_k: int
    quant: tuple[int, int] | None = None

    @property
    def f8(self) -> bool:
        return self.experts.op_type == MOE_EXPERTS_F8.name

    @property
    def router_logits(self) -> ir.Value:  # [T, E]
        return self.router.inputs[0]

    @property
    def x(self) -> ir.Value:  # [T, H]
        return self.experts.inputs[0]

    @property
    def w13(self) -> ir.Value:  # [E, 2I, H]
        return self.experts.inputs[3]

    @property
    def w2(self) -> ir.Value:  # [E, H, I] (codes: [E, H, I*bits/8])
        return self.experts.inputs[5 if self.quant or self.f8 else 4]

    @property
    def w13_scales(self) -> ir.Value:  # [E, 2I] or [E, 2I, H/block]
        return self.experts.inputs[4]

    @property
    def w2_scales(self) -> ir.Value:  # [E, H] or [E, H, I/block]
        return self.experts.inputs[6]

    @property
    def w13_zeros(self) -> ir.Value | None:  # [E, 2I, ceil(H/block*bits/8)]
        return self.experts.inputs[7] if self.experts.op_type in WITH_ZEROS else None

    @property
    def w2_zeros(self) -> ir.Value | None:  # [E, H, ceil(I/block*bits/8)]
        return self.experts.inputs[8] if self.experts.op_type in WITH_ZEROS else None

    @property
    def w13_order(self) -> ir.Value | None:  # int64 [E, H]: column j of expert e's w13 codes is input order[e, j]
        return self.experts.inputs[9] if self.experts.op_type == MOE_EXPERTS_QZP.name else None


def moe_pairs(graph: ir.Graph, ops: tuple[str, ...] = EXPERT_OPS) -> Iterator[MoEPair]:
    """Each MoEExperts node (of `ops`) whose routing comes straight from a MoERouter node, in graph order."""
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type not in ops:
            continue
        weights, experts = node.inputs[2], node.inputs[1]
        router = experts.producer()
        if router is None or router.op_type != MOE_ROUTER.name or router.domain != DOMAIN \
                or weights.producer() is not router:
            raise ValueError(f"{node.name}: MoEExperts routing does not come from one MoERouter node")
        quant = None
        if node.op_type not in (MOE_EXPERTS.name, MOE_EXPERTS_F8.name):
            quant = (node.attributes["bits"].as_int(), node.attributes["block_size"].as_int())
        yield MoEPair(router, node, router.attributes["top_k"].as_int(), quant)


def int64_const(tape: ir.tape.Tape, values: list[int]) -> ir.Value:
    """A Constant node holding an int64 vector (shapes, axes, slice bounds)."""
    return tape.op("Constant", [], {"value": ir.tensor(np.array(values, np.int64))})


def replace_pair(graph: ir.Graph, pair: MoEPair, new_nodes: list[ir.Node], new_output: ir.Value) -> None:
    """Insert `new_nodes` before the experts node, route its users to `new_output`, drop the old nodes."""
    graph.insert_before(pair.experts, new_nodes)
    old = pair.experts.outputs[0]
    ir.convenience.replace_all_uses_with(old, new_output, replace_graph_outputs=True)
    graph.remove(pair.experts, safe=True)
    if new_output.is_graph_output():
        new_output.name = old.name  # graph output names are part of the contract
    if not any(v.uses() for v in pair.router.outputs) and not any(v.is_graph_output() for v in pair.router.outputs):
        graph.remove(pair.router, safe=True)


def derived_initializer(graph: ir.Graph, value: ir.Value, fn, shape: tuple[int, ...], suffix: str,
                        dtype: ir.DataType | None = None) -> ir.Value:
    """A new initializer `{value.name}.{suffix}` = fn(value's array) of `shape` (and `dtype`, default value's),
    computed lazily while saving (a reshape, a split: the weights are not held twice in memory)."""
    tensor = value.const_value
    name = f"{value.name}.{suffix}"
    dtype = dtype or tensor.dtype
    lazy = ir.LazyTensor(lambda: ir.Tensor(fn(tensor.numpy()), name=name), dtype=dtype,
                         shape=ir.Shape(shape), name=name)
    new = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype), const_value=lazy)
    graph.register_initializer(new)
    return new


def swap_in(graph: ir.Graph, new: ir.Node, old: ir.Value, remove: list[ir.Node]) -> None:
    """Insert `new` before the last node of `remove`; its first output takes over `old`'s shape, type and
    users, and its name when it is a graph output (names of graph outputs are part of the contract); then
    drop `remove`."""
    out = new.outputs[0]
    out.shape, out.type = old.shape, old.type
    graph.insert_before(remove[-1], new)
    name = old.name
    ir.convenience.replace_all_uses_with(old, out, replace_graph_outputs=True)
    graph.remove(remove, safe=True)
    if out.is_graph_output():
        out.name = name


def tidy(model: ir.Model) -> ir.Model:
    """Drop nodes, initializers, functions and opset imports that nothing uses any more."""
    for p in (RemoveUnusedNodesPass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass()):
        model = p(model).model
    return model
