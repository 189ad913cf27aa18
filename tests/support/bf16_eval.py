"""bf16 graphs through `onnx.reference` with the arithmetic every bf16 kernel we target uses.

ONNX says what a bf16 op computes, not the precision of its intermediate steps. ONNX Runtime's CUDA kernels,
TensorRT and PyTorch's CPU kernels all read bf16, compute in float32 (elementwise math, matmul and reduction
accumulators) and round each op's result to bf16 once. `onnx.reference` instead runs numpy on ml_dtypes'
bfloat16 arrays, where every numpy step rounds: how often depends on ml_dtypes' promotion rules, which changed
in 0.7 (a Python float no longer promotes bfloat16 to float32, so its Sigmoid `1 / (1 + exp(-x))` rounds three
times instead of once, and routing decisions downstream flip). `evaluator` pins the first semantics: each
node's bf16 inputs are widened to float32, the node runs, and its float32 results are rounded to bf16 once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx

BF16 = np.dtype(ml_dtypes.bfloat16)
# ops whose output type is set by an attribute or another input, not by their inputs' type: run unchanged
TYPE_SETTING_OPS = {"Cast", "CastLike"}


def _one_rounding(run: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*inputs: Any, **kwargs: Any) -> Any:
        bf16_in = any(isinstance(x, np.ndarray) and x.dtype == BF16 for x in inputs)
        if not bf16_in:
            return run(*inputs, **kwargs)
        wide = [x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype == BF16 else x for x in inputs]
        outputs = run(*wide, **kwargs)
        return tuple(y.astype(BF16) if isinstance(y, np.ndarray) and y.dtype == np.float32 else y
                     for y in outputs)

    return wrapped


def evaluator(model: str | Path | onnx.ModelProto):
    """A `ReferenceEvaluator` of `model` whose bf16 ops compute in float32 and round once (module docstring)."""
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(model if isinstance(model, onnx.ModelProto) else str(model))
    for node in ev.rt_nodes_:
        # nested graphs (If, Loop, Scan) would run their own nodes unwrapped
        assert not node.need_context(), f"{node.op_type} holds a subgraph; evaluate the model inlined"
        if node.op_type not in TYPE_SETTING_OPS:
            node.run = _one_rounding(node.run)
    return ev
