"""FP8 experts as float for every lowering but `trt`: each MoEExpertsF8 becomes MoEExperts whose w13 / w2 are the
exact dequantization w = e4m3 * scale[row] in float32, cast to the scales' dtype (computed while saving), the
numbers the export wrote before the FP8 op existed (quantize_stored.py's float fallback). E experts, N rows, K
inputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..ops.spec import DOMAIN, MOE_EXPERTS, MOE_EXPERTS_F8
from .common import swap_in


def f8_dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """e4m3fn bytes uint8 [E, N, K], scales [E, N] (any float dtype) -> float32 [E, N, K], exactly."""
    import ml_dtypes

    return codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32) * scales.astype(np.float32)[..., None]


def _float_weight(graph: ir.Graph, codes: ir.Value, scales: ir.Value) -> ir.Value:
    """The float initializer `{codes}.float` [E, N, K] in the scales' dtype, computed lazily."""
    c, s = codes.const_value, scales.const_value
    if c is None or s is None:
        raise ValueError(f"{codes.name}: MoEExpertsF8's codes and scales must be initializers")
    dtype = s.dtype
    name = f"{codes.name}.float"

    def array():
        w = f8_dequantize(c.numpy(), s.numpy())
        return ir.Tensor(w.astype(s.numpy().dtype), name=name)

    shape = ir.Shape(c.shape)
    value = ir.Value(name=name, shape=shape, type=ir.TensorType(dtype),
                     const_value=ir.LazyTensor(array, dtype=dtype, shape=shape, name=name))
    graph.register_initializer(value)
    return value


def f8_to_float(model: ir.Model) -> ir.Model:
    """Replace every MoEExpertsF8 node by MoEExperts on its exact float weights."""
    graph = model.graph
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type != MOE_EXPERTS_F8.name:
            continue
        x, experts, weights, c13, s13, c2, s2 = node.inputs
        new = ir.node(MOE_EXPERTS.name, [x, experts, weights, _float_weight(graph, c13, s13),
                                         _float_weight(graph, c2, s2)], domain=DOMAIN, name=node.name)
        swap_in(graph, new, node.outputs[0], [node])
    return model
