"""MoEExpertsF8 (FP8 e4m3 experts as stored): its ONNX body decodes every byte as torch.float8_e4m3fn does, and a
real-data layer of it runs at parity with mixtral_ref's dense oracle on torch's e4m3 dequantization under every
lowering: the canonical graph (ONNX Runtime inlining the body), `portable` and `ort` (the exact float conversion
at build, f8_float.py) and `trt` with plugins-cpu (the MoEGemmSwiGLUF8 / MoEGemmDownF8 nodes as ONNX Runtime ops,
the Triton kernels under the interpreter). No TensorRT engine or GPU runs here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixtral_trt.mixtral_ref.moe import experts_reference

FP32_TOL = 1e-5  # relative to the output's max: fp32 experts, summation order differs


def _stored(w: torch.Tensor, per_tensor: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """w float32 [E, N, K] -> e4m3fn bytes uint8 [E, N, K] and the per-row scales [E, N] MoEExpertsF8 takes (a
    per-tensor scale broadcast to its rows), as compressed-tensors' compressor quantizes: scale = absmax / 448."""
    amax = w.abs().amax(dim=(1, 2), keepdim=True) if per_tensor else w.abs().amax(dim=2, keepdim=True)
    scales = amax / 448.0  # [E, 1, 1] or [E, N, 1]
    codes = (w / scales).to(torch.float8_e4m3fn).view(torch.uint8)
    return codes, scales.expand(w.shape[0], w.shape[1], 1)[..., 0].contiguous()


def _dequantized(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return codes.view(torch.float8_e4m3fn).float() * scales[..., None]


def test_f8_body_and_build_conversion_decode_every_byte_as_torch():
    """DequantizeF8 (the op's ONNX body, under ONNX Runtime) and f8_dequantize (the build-time conversion) equal
    torch.float8_e4m3fn -> float32 bit for bit on all 256 bytes (signed zeros, subnormals, 448), NaN at 0x7f / 0xff;
    a row's scale multiplies in float32."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from mixtral_trt.exporter.lowering.f8_float import f8_dequantize
    from mixtral_trt.exporter.ops.functions import ONNX_OPSET, function_protos
    from mixtral_trt.exporter.ops.spec import DOMAIN

    node = helper.make_node("DequantizeF8", ["codes", "scales"], ["w"], domain=DOMAIN)
    graph = helper.make_graph([node], "decode", [helper.make_tensor_value_info("codes", TensorProto.UINT8, [2, 1, 256]),
                                                 helper.make_tensor_value_info("scales", TensorProto.FLOAT, [2, 1])],
                              [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 256])])
    model = helper.make_model(graph, functions=function_protos(), ir_version=10,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(DOMAIN, 1)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).expand(2, 1, 256).contiguous()
    scales = torch.tensor([[1.0], [0.0137]])
    ref = _dequantized(codes, scales).numpy()
    nan = np.isnan(ref)
    assert np.nonzero(nan[0, 0])[0].tolist() == [0x7F, 0xFF]
    for what, out in (("body", session.run(["w"], {"codes": codes.numpy(), "scales": scales.numpy()})[0]),
                      ("build", f8_dequantize(codes.numpy(), scales.numpy()))):
        assert np.array_equal(np.isnan(out), nan), what
        bad = np.nonzero(out[~nan].view(np.int32) != ref[~nan].view(np.int32))[0]
        assert bad.size == 0, (what, [(out[~nan][b], ref[~nan][b]) for b in bad[:8]])


def _f8_layer(per_tensor: bool):
    """A one-layer canonical graph MoERouter + MoEExpertsF8 (fp32, real e4m3 data), its inputs and the oracle."""
    import onnx_ir as ir

    from mixtral_trt.exporter.ops.functions import ONNX_OPSET, attach_functions
    from mixtral_trt.exporter.ops.spec import MOE_EXPERTS_F8
    from mixtral_trt.mixtral_ref.moe import router_reference
    from support.moe_layer_graph import _layer

    t, e, k, h, i = 9, 4, 2, 32, 48
    g = torch.Generator().manual_seed(24)
    w13 = torch.randn(e, 2 * i, h, generator=g) * torch.logspace(-3, 0, h)[None, None, :]
    w2 = torch.randn(e, h, i, generator=g) * 0.05
    (c13, s13), (c2, s2) = _stored(w13, per_tensor), _stored(w2, per_tensor)
    assert (c13.view(torch.float8_e4m3fn).float().abs() < 2**-6).any()  # subnormal codes present

    def tensors(act):
        return [ir.Value(name=name, shape=ir.Shape(a.shape), type=ir.TensorType(dtype),
                         const_value=ir.tensor(a.numpy(), name=name))
                for name, a, dtype in (("w13.codes", c13, ir.DataType.UINT8), ("w13.scales", s13, act),
                                       ("w2.codes", c2, ir.DataType.UINT8), ("w2.scales", s2, act))]

    model = _layer("fp32", e, k, h, MOE_EXPERTS_F8.name, tensors, {})
    model.opset_imports[""] = ONNX_OPSET  # the export's, which the op bodies are written in
    attach_functions(model)
    logits, x = torch.randn(t, e, generator=g), torch.randn(t, h, generator=g)
    weights, experts = router_reference(logits, k)
    oracle = experts_reference(x, experts, weights, _dequantized(c13, s13), _dequantized(c2, s2))
    return model, {"router_logits": logits.numpy(), "x": x.numpy()}, oracle


def _run(model, feeds: dict, custom_ops: bool = False) -> torch.Tensor:
    import onnx_ir as ir
    import onnxruntime as ort

    options = ort.SessionOptions()
    if custom_ops:
        from mixtral_trt.plugins.cpu_ops import register_cpu_ops

        options.register_custom_ops_library(register_cpu_ops())
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["y"], feeds)[0])


@pytest.mark.parametrize("per_tensor", [False, True], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("target", ["canonical", "portable", "ort", "trt"])
def test_f8_layer_at_parity_under_every_lowering(target, per_tensor):
    """`trt` keeps the e4m3 bytes (F8 GEMM nodes, codes as INT32 words, per-row scales; run as plugins-cpu); the
    others hold no FP8 op any more, only standard / ONNX Runtime ops on float weights."""
    from mixtral_trt.exporter.lowering import lower
    from mixtral_trt.exporter.lowering.trt import CPU_DOMAIN

    model, feeds, oracle = _f8_layer(per_tensor)
    if target == "trt":
        model = lower(model, "trt", domain=CPU_DOMAIN, aot=False)
        gemms = {n.op_type: n for n in model.graph if n.op_type.endswith("F8")}
        assert set(gemms) == {"MoEGemmSwiGLUF8", "MoEGemmDownF8"}
        assert gemms["MoEGemmSwiGLUF8"].inputs[4].type.dtype.name == "INT32"
    elif target != "canonical":
        model = lower(model, target)
        assert not [n for n in model.graph if n.op_type == "MoEExpertsF8"]
    y = _run(model, feeds, custom_ops=target == "trt")
    err = ((y - oracle).abs().max() / oracle.abs().max()).item()
    assert err < FP32_TOL, f"{target} F8 layer: {err:.2e} (tolerance {FP32_TOL})"
