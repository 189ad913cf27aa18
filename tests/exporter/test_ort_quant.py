"""What ONNX Runtime's quantized CPU kernels compute, against independent torch oracles: MatMulNBits and
QMoE as the `ort` lowering configures them (ort_quant.ACCURACY_LEVEL) equal the dequantized weights times
activations rounded to int8 per block (mixtral_ref.quantized.quantize_activations) for 8-bit weights, and
times float activations for 4-bit ones. This is the semantics parity's reference reproduces."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.exporter.lowering.ort import MOE_ATTRIBUTES, interleave_gate_up
from mixtral_trt.exporter.lowering.ort_quant import ACCURACY_LEVEL, activations_block, qmoe_attributes
from mixtral_trt.mixtral_ref.quantized import quantize_activations

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def _session(nodes, inputs, output, inits):
    graph = helper.make_graph(nodes, "g", inputs, [output], inits)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(helper.make_model(graph, opset_imports=OPSETS).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("m", [1, 5])
def test_matmul_nbits_equals_its_oracle(bits, m):
    rng = np.random.default_rng(bits + m)
    k, n, block = 96, 40, 32  # M tokens, K inputs, N outputs
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    x = rng.standard_normal((m, k)).astype(np.float32)
    scheme = QuantScheme(bits, block)
    codes, scales = scheme.quantize(w)
    node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=ACCURACY_LEVEL[bits])
    session = _session([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                       helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n]),
                       [numpy_helper.from_array(codes.reshape(n, k // block, -1), "b"),
                        numpy_helper.from_array(scales.reshape(-1), "s")])
    got = session.run(None, {"x": x})[0]
    a8 = activations_block(bits, block)
    xin = quantize_activations(torch.from_numpy(x), a8).numpy() if a8 else x
    ref = xin @ scheme.dequantize(codes, scales).T
    err = _rel(got, ref)
    print(f"MatMulNBits {bits}-bit, M={m}: {err:.2e} against the oracle (int8 activations: {a8})")
    assert err < 1e-5


@pytest.mark.parametrize("bits", [8, 4])
def test_qmoe_equals_its_oracle(bits):
    rng = np.random.default_rng(bits)
    e, h, i, t, k, block = 8, 64, 96, 5, 2, 32  # E experts, H hidden, I intermediate, T tokens, top-k
    w13 = rng.standard_normal((e, 2 * i, h)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((e, h, i)).astype(np.float32) * 0.1
    x = rng.standard_normal((t, h)).astype(np.float32)
    logits = rng.standard_normal((t, e)).astype(np.float32)
    scheme = QuantScheme(bits, block)
    (c1, s1), (c2, s2) = scheme.quantize(w13), scheme.quantize(w2)
    node = helper.make_node("QMoE", ["x", "r", "c1", "s1", "", "c2", "s2"], ["y"], domain="com.microsoft",
                            **MOE_ATTRIBUTES, k=k, **qmoe_attributes(bits, block))
    session = _session([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, h]),
                                helper.make_tensor_value_info("r", TensorProto.FLOAT, [t, e])],
                       helper.make_tensor_value_info("y", TensorProto.FLOAT, [t, h]),
                       [numpy_helper.from_array(interleave_gate_up(c1), "c1"),
                        numpy_helper.from_array(interleave_gate_up(s1), "s1"),
                        numpy_helper.from_array(c2, "c2"), numpy_helper.from_array(s2, "s2")])
    got = session.run(None, {"x": x, "r": logits})[0]
    a8 = activations_block(bits, block)
    q = (lambda v: quantize_activations(v, a8)) if a8 else (lambda v: v)
    d13, d2 = torch.from_numpy(scheme.dequantize(c1, s1)), torch.from_numpy(scheme.dequantize(c2, s2))
    top, idx = torch.topk(torch.from_numpy(logits), k)
    weights = torch.softmax(top, -1)
    ref = torch.zeros(t, h)
    xq = q(torch.from_numpy(x))
    for tok in range(t):
        for j in range(k):
            gate, up = F.linear(xq[tok], d13[idx[tok, j]]).chunk(2)
            ref[tok] += weights[tok, j] * F.linear(q(F.silu(gate) * up), d2[idx[tok, j]])
    err = _rel(got, ref.numpy())
    print(f"QMoE {bits}-bit: {err:.2e} against the oracle (int8 activations: {a8})")
    assert err < 1e-5
