"""The FP8 e4m3 GEMMs (MoEGemmSwiGLUF8 / MoEGemmDownF8: MoEGemmSwiGLUQ / MoEGemmDownQ's kernels with BITS =
F8_E4M3) under the Triton interpreter: the byte decoding against torch.float8_e4m3fn for all 256 bytes, the GEMMs
against their references and the pipeline against mixtral_ref's dense oracle on torch's dequantization."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from mixtral_trt.mixtral_ref.moe import experts_reference
from mixtral_trt.plugins.dequant import e4m3_to_float
from mixtral_trt.plugins.moe_align.launch import run as align
from mixtral_trt.plugins.moe_router.launch import run as router
from mixtral_trt.plugins.tiles import ALIGN_BLOCK, CPU_TACTIC

from .test_kernels import DTYPES, REL_TOL, routing


@triton.jit
def _decode_kernel(b_ptr, o_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    tl.store(o_ptr + i, e4m3_to_float(tl.load(b_ptr + i)))


def test_e4m3_decoding_is_torchs_for_every_byte():
    """All 256 bytes: the integer decoding equals torch.float8_e4m3fn -> float32 bit for bit (signed zeros,
    subnormals, the largest 448), and 0x7f / 0xff (e4m3fn's only NaNs) decode to NaN."""
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    out = torch.empty(256, dtype=torch.float32)
    _decode_kernel[(1,)](codes, out, N=256)
    ref = codes.view(torch.float8_e4m3fn).float()
    nan = torch.isnan(ref)
    assert torch.nonzero(nan)[:, 0].tolist() == [0x7F, 0xFF]
    assert torch.equal(torch.isnan(out), nan), torch.nonzero(torch.isnan(out) != nan)[:, 0].tolist()
    bad = torch.nonzero(out[~nan].view(torch.int32) != ref[~nan].view(torch.int32))[:, 0]
    assert bad.numel() == 0, [(hex(int(b)), out[~nan][b].item(), ref[~nan][b].item()) for b in bad[:8]]


def _stored(w: torch.Tensor, per_tensor: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """w float32 [E, N, K] -> e4m3fn bytes [E, N, K] and scales ([E, N] per row or [E] per tensor) as a
    compressed-tensors compressor stores them: scale = absmax / 448, codes = w / scale rounded to e4m3."""
    amax = w.abs().amax(dim=(1, 2)) if per_tensor else w.abs().amax(dim=2)
    scales = amax / 448.0
    s = scales[:, None, None] if per_tensor else scales[:, :, None]
    return (w / s).to(torch.float8_e4m3fn).view(torch.uint8), scales


@pytest.mark.parametrize("per_tensor", [False, True])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("tactic", [CPU_TACTIC, 3])
def test_f8_gemms_match_references(per_tensor, dtype, tactic):
    from mixtral_trt.plugins.moe_gemm_down_f8.launch import run as gemm_down_f8
    from mixtral_trt.plugins.moe_gemm_down_f8.reference import moe_gemm_down_f8_reference
    from mixtral_trt.plugins.moe_gemm_swiglu_f8.launch import run as gemm_swiglu_f8
    from mixtral_trt.plugins.moe_gemm_swiglu_f8.reference import f8_dequantize, moe_gemm_swiglu_f8_reference

    dt, t, e, k, h, i = DTYPES[dtype], 21, 8, 2, 64, 96
    g = torch.Generator().manual_seed(13)
    # weights spanning e4m3's range: a few rows much larger, so the rest land on subnormal codes too
    w13 = torch.randn(e, 2 * i, h, generator=g) * torch.logspace(-3, 0, h)[None, None, :]
    w2 = torch.randn(e, h, i, generator=g) * 0.05
    c13, s13 = _stored(w13, per_tensor)
    c2, s2 = _stored(w2, per_tensor)
    assert ((c13 & 0x78) == 0).any(), "no subnormal codes"
    s13, s2 = s13.to(dt), s2.to(dt)
    x = torch.randn(t, h, generator=torch.Generator().manual_seed(6)).to(dt)
    weights, experts = router(routing(t, e, k, seed=7), k)
    routing_ = align(experts, e, ALIGN_BLOCK)
    rows = torch.nonzero(routing_[0] < t * k)[:, 0]
    inter = gemm_swiglu_f8(x, *routing_, c13, s13, k, ALIGN_BLOCK, tactic=tactic)
    ref = moe_gemm_swiglu_f8_reference(x, *routing_, c13, s13, k, ALIGN_BLOCK)
    err = ((inter[rows].float() - ref[rows].float()).abs().max() / ref[rows].float().abs().max()).item()
    assert err < REL_TOL[dtype], f"SwiGLU GEMM fp8 per_tensor={per_tensor} {dtype} tactic {tactic}: {err:.2e}"
    y_pairs = gemm_down_f8(inter, *routing_, weights, c2, s2, k, ALIGN_BLOCK, tactic=tactic)
    ref_pairs = moe_gemm_down_f8_reference(inter, *routing_, weights, c2, s2, k, ALIGN_BLOCK)
    err = ((y_pairs - ref_pairs).abs().max() / ref_pairs.abs().max()).item()
    assert err < REL_TOL[dtype], f"down GEMM fp8 per_tensor={per_tensor} {dtype} tactic {tactic}: {err:.2e}"
    y = y_pairs.view(t, k, -1).sum(dim=1).to(dt)
    d13 = f8_dequantize(c13, s13).to(dt).float()
    d2 = f8_dequantize(c2, s2).to(dt).float()
    oracle = experts_reference(x.float(), experts, weights, d13, d2)
    err = ((y.float() - oracle).abs().max() / oracle.abs().max()).item()
    assert err < REL_TOL[dtype], f"fp8 pipeline per_tensor={per_tensor} {dtype} tactic {tactic}: {err:.2e}"


def test_f8_launch_refuses_other_layouts():
    from mixtral_trt.plugins.moe_gemm_down_f8.launch import run as gemm_down_f8

    inter = torch.zeros(64, 16)
    routing_ = (torch.zeros(64, dtype=torch.int32), torch.zeros(1, dtype=torch.int32),
                torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"MoEGemmDownF8: codes torch.int32 \(2, 8, 4\), expected torch.uint8"):
        gemm_down_f8(inter, *routing_, torch.zeros(1, 2), torch.zeros(2, 8, 4, dtype=torch.int32), torch.ones(2, 8),
                     2, ALIGN_BLOCK)
    with pytest.raises(ValueError, match=r"MoEGemmDownF8: scales \(2, 8, 2\)"):
        gemm_down_f8(inter, *routing_, torch.zeros(1, 2), torch.zeros(2, 8, 16, dtype=torch.uint8),
                     torch.ones(2, 8, 2), 2, ALIGN_BLOCK)


def test_f8_gemms_as_onnxruntime_ops():
    """The `plugins-cpu` path of the F8 GEMMs: a real-data MoE layer lowered for TensorRT with the F8 GEMM nodes
    (support/moe_layer_graph.py as_f8; e4m3 bytes as INT32 words, per-row and per-tensor scales) run by ONNX
    Runtime through the plugins' Python ops (plugins/*/cpu.py: the Triton kernels under the interpreter), against
    mixtral_ref's dense oracle on torch's e4m3 dequantization (fp32, 1e-5)."""
    import numpy as np
    import onnx_ir as ir
    import onnxruntime as ort

    from mixtral_trt.common.quant import QuantScheme
    from mixtral_trt.exporter.lowering.trt import CPU_DOMAIN, lower
    from mixtral_trt.exporter.ops.spec import MOE_EXPERTS
    from mixtral_trt.exporter.quantize import quantize_experts
    from mixtral_trt.mixtral_ref.moe import router_reference
    from mixtral_trt.plugins.cpu_ops import register_cpu_ops
    from mixtral_trt.plugins.moe_gemm_swiglu_f8.reference import f8_dequantize
    from support.moe_layer_graph import _layer, as_f8

    t, e, k, h, i = 9, 4, 2, 32, 48
    g = torch.Generator().manual_seed(21)
    w13 = torch.randn(e, 2 * i, h, generator=g) * torch.logspace(-3, 0, h)[None, None, :]
    w2 = torch.randn(e, h, i, generator=g) * 0.05
    (c13, s13), (c2, s2) = _stored(w13, per_tensor=False), _stored(w2, per_tensor=True)
    model = _layer("fp32", e, k, h, MOE_EXPERTS.name, lambda act: [
        ir.Value(name=name, shape=ir.Shape(w.shape), type=ir.TensorType(act),
                 const_value=ir.tensor(w.numpy(), name=name)) for name, w in (("w13", w13), ("w2", w2))], {})
    quantize_experts(model, QuantScheme(8, 0), "fp32")
    model = as_f8(lower(model, CPU_DOMAIN, aot=False))
    gemms = {n.op_type: n for n in model.graph if n.op_type.endswith("F8")}
    assert set(gemms) == {"MoEGemmSwiGLUF8", "MoEGemmDownF8"}
    for node, at, codes, scales in ((gemms["MoEGemmSwiGLUF8"], 4, c13, s13), (gemms["MoEGemmDownF8"], 5, c2, s2)):
        rows = codes.shape[1]
        node.inputs[at].const_value = ir.tensor(codes.numpy().view(np.int32), name=node.inputs[at].name)
        per_row = scales.reshape(e, 1).expand(e, rows) if scales.dim() == 1 else scales  # the plugins' [E, N]
        node.inputs[at + 1].const_value = ir.tensor(per_row.contiguous().numpy(), name=node.inputs[at + 1].name)
    options = ort.SessionOptions()
    options.register_custom_ops_library(register_cpu_ops())
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    logits = torch.randn(t, e, generator=g)
    x = torch.randn(t, h, generator=g)
    (y,) = session.run(["y"], {"router_logits": logits.numpy(), "x": x.numpy()})
    weights, experts = router_reference(logits, k)
    oracle = experts_reference(x, experts, weights, f8_dequantize(c13, s13), f8_dequantize(c2, s2))
    err = ((torch.from_numpy(y) - oracle).abs().max() / oracle.abs().max()).item()
    assert err < REL_TOL["fp32"], f"plugins-cpu F8 layer: {err:.2e}"
