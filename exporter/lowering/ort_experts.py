"""MoE as one MatMul pair per expert, for ONNX Runtime's CPU execution provider (`ort --experts matmul`).

Why not com.microsoft::MoE on the CPU (onnxruntime 1.32, contrib_ops/cpu/moe/moe_cpu.cc, measured on `small`,
6 layers, 2 threads): the kernel runs each routed expert as an unthreaded `MlasGemm` with a transposed,
unpacked B. At one token MLAS takes its GEMV path (~27 GB/s); at two or more tokens per expert it packs,
and so transposes, the whole expert on every call (~17 GB/s at a batch of 8). A `MatMul` with a constant B is
prepacked once at session load and threaded over its output columns, whatever the routing. Six such layers
alone, routing drawn anew per call, best of 3 x 40 calls: 1 token 5.21 -> 2.44 ms, 8 tokens 28.0 -> 12.9 ms,
64 tokens 58.4 -> 29.5 ms. In a whole `small` engine the ~13 small nodes per expert (run also for experts
with no token: 5-6 us each) eat the gain at one token (batch-1 decode even), and keep it at a batch of 8
(30.2 -> 17.8 ms per step) and in prefill (README, "Build").

Per layer (T tokens, H hidden, I intermediate, E experts, k routed, n_e tokens routed to expert e):

    TopK(logits, k) -> Softmax over the k      [T, k]   Mixtral's routing (softmax, top-k, renormalise)
    ScatterElements into zeros [T, E], ^T      [E, T]   each expert's weight for each token (0: not routed)
    per expert e:
      idx  = NonZero(row e)^T                  [n_e, 1]
      x_e  = GatherND(x, idx)                  [n_e, H]
      x_e  = Gather(x_e, order_e, axis=1)      [n_e, H]    act-order experts only (MoEExpertsQZP's w13_order)
      h    = MatMul(x_e, W13_e)                [n_e, 2I]   gate columns then up columns
      a    = silu(gate) * up * weight          [n_e, I]
      out  = ScatterND(out, idx, MatMul(a, W2_e), reduction=add)   out [T, H] summed in float32

An expert no token chose runs on zero rows (its MatMuls read nothing). Quantized experts can use
`com.microsoft::MatMulNBits` on the same codes (ort_quant.py's layout and accuracy level), but the CPU QMoE
already runs block-wise experts as prepacked QNBit GEMMs and was faster (int8 `small`, batch 1 / 8: 3.9 / 8.0
ms per step against 5.0 / 8.8), so expert_form (ort.py) keeps QMoE for them unless asked.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.tape

from .common import MoEPair, derived_initializer, int64_const
from .ort_quant import MS_DOMAIN, nbits_operands

# every node of a lowered layer is named "{experts node}.moe.{what}" (the decode profile's "moe" bucket)
MOE_MARK = ".moe."


def _float_weight(graph: ir.Graph, weights: ir.Value, e: int) -> ir.Value:
    """Expert e's MatMul B operand: [E, N, K] -> W_e^T [K, N] (lazily sliced and transposed)."""
    n, k = int(weights.shape[1]), int(weights.shape[2])
    return derived_initializer(graph, weights, lambda a: np.ascontiguousarray(a[e].T), (k, n), f"expert{e}.T")


def _linear(tape: ir.tape.Tape, graph: ir.Graph, pair: MoEPair, x: ir.Value, fc: int, e: int, name: str):
    """x @ W^T for expert e's fc1 (W13) or fc2 (W2): MatMul, or MatMulNBits for quantized experts."""
    if pair.quant is None:
        return tape.op("MatMul", [x, _float_weight(graph, pair.w13 if fc == 1 else pair.w2, e)], name=name)
    bits, block = pair.quant
    codes, scales, zeros = ((pair.w13, pair.w13_scales, pair.w13_zeros) if fc == 1
                            else (pair.w2, pair.w2_scales, pair.w2_zeros))
    b, s, attributes = nbits_operands(graph, codes, scales, bits, block, lambda a: a[e], f"expert{e}.nbits")
    inputs = [x, b, s]
    if zeros is not None:  # packed uint8 [N, ceil(K/block*bits/8)], MatMulNBits' own layout
        z_shape = tuple(int(d) for d in zeros.shape[1:])
        inputs.append(derived_initializer(graph, zeros, lambda a: np.ascontiguousarray(a[e]), z_shape,
                                          f"expert{e}.nbits"))
    return tape.op("MatMulNBits", inputs, attributes, domain=MS_DOMAIN, name=name)


def lower_experts(graph: ir.Graph, tape: ir.tape.Tape, pair: MoEPair) -> ir.Value:
    """Record the per-expert nodes of one MoE layer on `tape`; returns the layer's output [T, H]."""
    if pair.quant is None and pair.w13.const_value is None:
        raise ValueError(f"{pair.experts.name}: per-expert MatMuls need constant expert weights")
    if pair.quant is not None and pair.quant[1] == 0:
        raise ValueError(f"{pair.experts.name}: MatMulNBits needs block-wise scales (per-channel given)")
    experts, base = int(pair.w13.shape[0]), pair.experts.name + MOE_MARK.rstrip(".")
    values, indices = tape.op_multi_out("TopK", [pair.router_logits, int64_const(tape, [pair.top_k])],
                                        {"axis": -1}, num_outputs=2, name=f"{base}.topk")  # [T, k] x 2
    weights = tape.op("Softmax", [values], {"axis": -1}, name=f"{base}.softmax")  # [T, k]
    zeros_te = tape.op("ConstantOfShape", [tape.op("Shape", [pair.router_logits])],
                       {"value": ir.tensor(np.zeros(1, np.float32))})
    dense = tape.op("ScatterElements", [tape.op("CastLike", [zeros_te, weights]), indices, weights], {"axis": 1},
                    name=f"{base}.route")  # [T, E]
    per_expert = tape.op("Transpose", [dense], {"perm": [1, 0]})  # [E, T]
    # [T, H] float32 sum (CPU ScatterND adds no float16), cast to the activations' type at the end
    out = tape.op("ConstantOfShape", [tape.op("Shape", [pair.x])], {"value": ir.tensor(np.zeros(1, np.float32))})
    one = int64_const(tape, [1])
    for e in range(experts):
        name = f"{base}.expert{e}"
        row = tape.op("Gather", [per_expert, tape.op("Constant", [], {"value": ir.tensor(np.int64(e))})], {"axis": 0})
        idx = tape.op("Transpose", [tape.op("NonZero", [row])], {"perm": [1, 0]}, name=f"{name}.rows")  # [n, 1]
        x_e = tape.op("GatherND", [pair.x, idx])  # [n, H]
        if pair.w13_order is not None:  # the features in the order of expert e's w13 codes' columns
            order = derived_initializer(graph, pair.w13_order, lambda a, e=e: np.ascontiguousarray(a[e]),
                                        (int(pair.w13_order.shape[1]),), f"expert{e}")
            x_e = tape.op("Gather", [x_e, order], {"axis": 1}, name=f"{name}.order")
        h = _linear(tape, graph, pair, x_e, 1, e, f"{name}.fc1")  # [n, 2I]
        gate, up = tape.op_multi_out("Split", [h], {"axis": 1, "num_outputs": 2}, num_outputs=2)  # [n, I] x 2
        act = tape.op("Mul", [tape.op("Mul", [gate, tape.op("Sigmoid", [gate])]), up])
        weighted = tape.op("Mul", [act, tape.op("Unsqueeze", [tape.op("GatherND", [row, idx]), one])])  # [n, I]
        y = _linear(tape, graph, pair, weighted, 2, e, f"{name}.fc2")  # [n, H]
        y32 = tape.op("Cast", [y], {"to": ir.DataType.FLOAT}) if pair.x.dtype != ir.DataType.FLOAT else y
        out = tape.op("ScatterND", [out, idx, y32], {"reduction": "add"}, name=f"{name}.add")
    if pair.x.dtype != ir.DataType.FLOAT:
        out = tape.op("CastLike", [out, pair.x])
    for i, node in enumerate(tape.nodes):
        node.name = node.name or f"{base}.{i}"
    return out
