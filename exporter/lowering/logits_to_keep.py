"""An optional `logits_to_keep` input on ONNX Runtime engines: the LM head computes only the last N positions.

A prompt's prefill needs the logits of its last position only (the next token), yet the canonical graph runs the
LM head over every position: for `small` at 512 tokens that is 12.6 G of its ~36 G multiply-adds. The input, an
int64 scalar, is an overridable initializer (a graph input whose initializer is its default, 0): callers that
do not know it (onnxruntime-genai, parity, perplexity) feed nothing and get every position, as before;
`Engine.forward(logits_to_keep=N)` feeds N and the hidden states are sliced to their last N positions before
the LM head, so `logits` comes back [B, N, V] (HF transformers' argument of the same name; llama.cpp computes
the last position only unless asked). The KV cache and every other output are unchanged.

    hidden [B, T, H] --Slice(axis 1, from T - N, N > 0; from 0 otherwise; never below 0)--> [B, T', H] --LM head-->
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from mixtral_trt.common.contract import LOGITS_TO_KEEP as INPUT

from .common import int64_const

LOGITS = "logits"


def expose_logits_to_keep(model: ir.Model) -> ir.Model:
    """Add the input where the `logits` output is [B, T, V] from an LM head node whose first input is the hidden
    states [B, T, H] (every ONNX Runtime lowering); other graphs are returned as they are."""
    graph = model.graph
    out = next((v for v in graph.outputs if v.name == LOGITS), None)
    head = out.producer() if out is not None else None
    if head is None or out.shape is None or out.shape.rank() != 3 or INPUT in {v.name for v in graph.inputs}:
        return model
    hidden = head.inputs[0]
    if hidden is None or hidden.shape is None or hidden.shape.rank() != 3:
        return model
    keep = ir.Value(name=INPUT, shape=ir.Shape([]), type=ir.TensorType(ir.DataType.INT64),
                    const_value=ir.tensor(np.array(0, np.int64), name=INPUT))
    graph.inputs.append(keep)
    graph.register_initializer(keep)
    tape = ir.tape.Tape()
    zero = int64_const(tape, [0])
    n = tape.op("Reshape", [keep, int64_const(tape, [1])])  # [1]
    t = tape.op("Slice", [tape.op("Shape", [hidden]), int64_const(tape, [1]), int64_const(tape, [2])])  # [1]: T
    start = tape.op("Where", [tape.op("Greater", [n, zero]), tape.op("Max", [tape.op("Sub", [t, n]), zero]), zero])
    end = int64_const(tape, [np.iinfo(np.int64).max])
    sliced = tape.op("Slice", [hidden, start, end, int64_const(tape, [1])])  # [B, T', H]
    sliced.shape = ir.Shape([hidden.shape[0], "kept", hidden.shape[2]])
    sliced.type = hidden.type
    graph.insert_before(head, list(tape.nodes))
    head.replace_input_with(0, sliced)
    out.shape = ir.Shape([out.shape[0], "kept", out.shape[2]])
    return model
