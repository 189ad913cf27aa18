"""Graph utilities shared by the lowerings: finding the MoE op pairs and tidying up afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedFunctionsPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from ..ops.spec import DOMAIN, MOE_EXPERTS, MOE_ROUTER


@dataclass(frozen=True)
class MoEPair:
    """One layer's router + experts nodes and the values a lowering needs."""

    router: ir.Node
    experts: ir.Node
    top_k: int

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
    def w2(self) -> ir.Value:  # [E, H, I]
        return self.experts.inputs[4]


def moe_pairs(graph: ir.Graph) -> Iterator[MoEPair]:
    """Each MoEExperts node whose routing comes straight from a MoERouter node, in graph order."""
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type != MOE_EXPERTS.name:
            continue
        weights, experts = node.inputs[2], node.inputs[1]
        router = experts.producer()
        if router is None or router.op_type != MOE_ROUTER.name or router.domain != DOMAIN \
                or weights.producer() is not router:
            raise ValueError(f"{node.name}: MoEExperts routing does not come from one MoERouter node")
        yield MoEPair(router, node, router.attributes["top_k"].as_int())


def const_tensor(value: ir.Value, what: str) -> ir.TensorProtocol:
    """The initializer behind `value` (expert weights must be constants to be re-laid out)."""
    if value.const_value is None:
        raise ValueError(f"{what} ({value.name}) is not an initializer")
    return value.const_value


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


def tidy(model: ir.Model) -> ir.Model:
    """Drop nodes, initializers, functions and opset imports that nothing uses any more."""
    for p in (RemoveUnusedNodesPass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass()):
        model = p(model).model
    return model
