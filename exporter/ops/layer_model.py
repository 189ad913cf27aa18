"""A graph holding one MoE layer (MoERouter + MoEExperts, with function bodies): for op-level tests and
the MoE-layer benchmark. Expert weights are graph inputs, or initializers when given."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .functions import ONNX_OPSET, function_protos
from .spec import DOMAIN, MOE_EXPERTS, MOE_ROUTER

ELEM_TYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


def moe_layer_model(dtype: str, top_k: int, w13: np.ndarray | None = None, w2: np.ndarray | None = None
                    ) -> onnx.ModelProto:
    """(router_logits [T, E], x [T, H][, w13 [E, 2I, H], w2 [E, H, I]]) -> y [T, H]."""
    t = ELEM_TYPES[dtype]
    nodes = [
        helper.make_node(MOE_ROUTER.name, ["router_logits"], ["weights", "experts"], domain=DOMAIN, top_k=top_k),
        helper.make_node(MOE_EXPERTS.name, ["x", "experts", "weights", "w13", "w2"], ["y"], domain=DOMAIN),
    ]
    shapes = {"router_logits": ["T", "E"], "x": ["T", "H"], "w13": ["E", "2I", "H"], "w2": ["E", "H", "I"]}
    consts = {name: arr for name, arr in (("w13", w13), ("w2", w2)) if arr is not None}
    graph = helper.make_graph(
        nodes, "moe_layer",
        [helper.make_tensor_value_info(n, t, s) for n, s in shapes.items() if n not in consts],
        [helper.make_tensor_value_info("y", t, ["T", "H"])],
        initializer=[numpy_helper.from_array(a, n) for n, a in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                                    helper.make_opsetid(DOMAIN, 1)], functions=function_protos())
    model.ir_version = 10
    return model
