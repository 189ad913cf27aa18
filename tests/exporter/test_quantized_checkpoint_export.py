"""Quantized checkpoints (GPTQ, AWQ, compressed-tensors, written by tests/support/quant_checkpoints.py with the
formats' own packers) through export -> ort engine -> parity against the reference loaded from the same
checkpoint (each linear as its format dequantizes it): codes kept as stored where the storage format takes
them, the format's float dequantization otherwise, the contract saying which; greedy decoding equal."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref.checkpoint import load_model
from mixtral_trt.parity import check_engine
from support.quant_checkpoints import QUANT_CFG, write_awq, write_compressed, write_gptq

pytest.importorskip("onnxruntime_genai")

CASES = {  # name -> (writer, how the export takes it: stored codes (with zero points, FP8 bytes) or float)
    "gptq-int4-sym-g32": (lambda p: write_gptq(p, 4, 32, False, True, "gptq"), "stored"),
    "gptq-int8-asym-g64": (lambda p: write_gptq(p, 8, 64, False, False, "gptq"), "stored+zeros"),
    "gptq-int4-asym-actorder-g32": (lambda p: write_gptq(p, 4, 32, True, False, "gptq_v2"), "stored+zeros"),
    "gptq-int8-sym-actorder-g64": (lambda p: write_gptq(p, 8, 64, True, True, "gptq", lm_head=True), "stored"),
    "gptq-int4-actorder-split-orders": (lambda p: write_gptq(p, 4, 32, True, False, "gptq_v2", split_orders=True),
                                        "float"),
    "awq-int4-g64": (lambda p: write_awq(p, 64), "stored+zeros"),
    "ct-int4-sym-g32": (lambda p: write_compressed(p, "pack-quantized", 4, "group", 32, True), "stored"),
    "ct-int4-asym-g128": (lambda p: write_compressed(p, "pack-quantized", 4, "group", 128, False), "stored+zeros"),
    "ct-int4-asym-actorder-g32": (lambda p: write_compressed(p, "pack-quantized", 4, "group", 32, False,
                                                             actorder=True), "stored+zeros"),
    "ct-int8-sym-channel": (lambda p: write_compressed(p, "pack-quantized", 8, "channel", None, True), "stored"),
    "ct-int8-asym-channel": (lambda p: write_compressed(p, "pack-quantized", 8, "channel", None, False),
                             "stored+zeros"),  # per-channel scales / zero points repeated over blocks of 128
    "gptq-int4-asym-channel": (lambda p: write_gptq(p, 4, -1, False, False, "gptq_v2"), "stored+zeros"),
    "gptq-int8-asym-actorder-channel": (lambda p: write_gptq(p, 8, -1, True, False, "gptq"), "stored+zeros"),
    "ct-fp8-channel": (lambda p: write_compressed(p, "float-quantized", 8, "channel"), "stored+f8"),
    "ct-fp8-channel-fp16": (lambda p: write_compressed(p, "float-quantized", 8, "channel"), "float"),  # bf16 scales
}
DTYPES = {"ct-fp8-channel-fp16": "fp16"}


@pytest.mark.parametrize("name", list(CASES))
def test_quantized_checkpoint_engine_parity(name, tmp_path):
    write, taken = CASES[name]
    checkpoint = tmp_path / "ckpt"
    write(checkpoint)
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", dtype=DTYPES.get(name, "fp32"), max_seq=64,
                                 max_batch=2)
    extra = json.loads((onnx_dir / "graph.json").read_text())["extra"]
    assert extra["checkpoint_quantization"]["exported_as"].startswith(taken.split("+")[0]), extra
    assert extra["checkpoint_quantization"].get("fp8_experts", False) == taken.endswith("f8"), extra
    assert ("quantization" in extra) == (taken.startswith("stored") and not taken.endswith("f8"))
    if "quantization" in extra:
        assert extra["quantization"]["zero_points"] == taken.endswith("zeros")
    engine_dir = build_engine(onnx_dir, tmp_path / "engine", "ort")
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    assert manifest["contract"]["extra"]["checkpoint_quantization"] == extra["checkpoint_quantization"]
    if extra.get("quantization", {}).get("input_order"):  # act-order codes: QMoE takes no per-expert input order
        assert manifest["backend_info"]["experts"] == "matmul", manifest["backend_info"]
    report = check_engine(engine_dir, checkpoint, greedy_steps=8)
    assert not report.failures, report.failures
    assert all(g.exact for g in report.greedy), [(g.matched, g.steps) for g in report.greedy]


def test_stored_codes_are_the_checkpoints(tmp_path):
    """The exported MoEExpertsQ / LinearQ initializers dequantize to exactly the weights the reference loads
    from the checkpoint: the codes and scales went out as stored, not re-quantized."""
    checkpoint = tmp_path / "ckpt"
    write_gptq(checkpoint, 4, 32, False, True, "gptq_v2")
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    inits = {i.name: i for i in onnx.load(onnx_dir / "model.onnx", load_external_data=True).graph.initializer}
    reference = load_model(checkpoint, dtype=torch.float32)
    scheme = QuantScheme(4, 32)
    for i, layer in enumerate(reference.layers):
        for what, param in (("w13", layer.moe.w13), ("w2", layer.moe.w2)):
            codes, scales = (numpy_helper.to_array(inits[f"model.layers.{i}.moe.{what}.{s}"])
                             for s in ("codes", "scales"))
            assert np.array_equal(scheme.dequantize(codes, scales), param.detach().numpy()), (i, what)
        name = f"model.layers.{i}.attn.wq.weight"
        codes, scales = (numpy_helper.to_array(inits[f"{name}.{s}"]) for s in ("codes", "scales"))
        assert np.array_equal(scheme.dequantize(codes, scales), layer.attn.wq.weight.detach().numpy())


def zero_point_linears(onnx_dir, checkpoint, attention: str):
    """(name, (codes, scales, zeros), the reference's float32 weight) of each layer's experts and `attention`
    projection in an export with zero points (MoEExpertsQZ / LinearQZ, checked)."""
    model = onnx.load(onnx_dir / "model.onnx", load_external_data=True)
    assert {n.op_type for n in model.graph.node if n.domain == "mixtral"} == {"MoERouter", "MoEExpertsQZ", "LinearQZ"}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for i, layer in enumerate(load_model(checkpoint, dtype=torch.float32).layers):
        for name, param in ((f"model.layers.{i}.moe.w13", layer.moe.w13), (f"model.layers.{i}.moe.w2", layer.moe.w2),
                            (f"model.layers.{i}.attn.{attention}.weight", getattr(layer.attn, attention).weight)):
            yield name, tuple(inits[f"{name}.{s}"] for s in ("codes", "scales", "zeros")), param.detach().numpy()


def test_stored_zero_points_are_the_checkpoints(tmp_path):
    """AWQ's codes and zero points go out as MoEExpertsQZ / LinearQZ initializers that dequantize (with the zero
    points) to exactly the reference's weights; the portable lowering (the ops' ONNX function bodies) runs them
    to parity, and so does the trt lowering's plugins-cpu engine (MoEGemmSwiGLUQZ / MoEGemmDownQZ, the plugin
    kernels under the interpreter)."""
    checkpoint = tmp_path / "ckpt"
    write_awq(checkpoint, 32)
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    scheme = QuantScheme(4, 32)
    for name, stored, want in zero_point_linears(onnx_dir, checkpoint, "wo"):
        assert np.array_equal(scheme.dequantize(*stored), want), name
    report = check_engine(build_engine(onnx_dir, tmp_path / "portable", "portable"), checkpoint, greedy_steps=4)
    assert not report.failures and report.logits.max_rel < 1e-5, report.logits
    check_plugin_engine(onnx_dir, tmp_path / "plugins", checkpoint, ordered=0)


@pytest.mark.parametrize("writer", ["gptq", "compressed-tensors"])
def test_per_channel_zero_points_repeated_over_blocks(writer, tmp_path):
    """Per-channel asymmetric codes (GPTQ group_size -1 sym false, compressed-tensors channel asymmetric) go out as
    stored: MoEExpertsQZ / LinearQZ in blocks of 32 (the largest power of two of 16..128 dividing hidden 128 and
    intermediate 96), each row's scale and zero point repeated in its blocks; they dequantize to exactly the
    reference's weights (the format's own dequantization) and the portable lowering runs them to parity."""
    checkpoint, cfg = tmp_path / "ckpt", dataclasses.replace(QUANT_CFG, intermediate_size=96)
    if writer == "gptq":
        write_gptq(checkpoint, 4, -1, False, False, "gptq", cfg=cfg)
    else:
        write_compressed(checkpoint, "pack-quantized", 4, "channel", None, False, cfg=cfg)
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    extra = json.loads((onnx_dir / "graph.json").read_text())["extra"]
    assert extra["quantization"]["block_size"] == 32 and extra["quantization"]["zero_points"], extra
    assert extra["checkpoint_quantization"]["group_size"] == 0, extra
    assert "repeated over blocks of 32 inputs" in extra["checkpoint_quantization"]["exported_as"], extra
    scheme = QuantScheme(4, 32)
    for name, (codes, scales, zeros), want in zero_point_linears(onnx_dir, checkpoint, "wq"):
        assert scales.shape[-1] == want.shape[-1] // 32 > 1, (name, scales.shape)
        assert np.array_equal(scales, np.repeat(scales[..., :1], scales.shape[-1], -1)), name  # one per row
        assert np.array_equal(scheme.dequantize(codes, scales, zeros), want), name
    report = check_engine(build_engine(onnx_dir, tmp_path / "portable", "portable"), checkpoint, greedy_steps=4)
    print(f"portable ({writer} per-channel asymmetric) vs reference: logits max rel {report.logits.max_rel:.2e}")
    assert not report.failures and report.logits.max_rel < 1e-5, report.logits


def test_per_channel_zero_points_without_a_block_fall_back(tmp_path):
    """No power of two of 16..128 divides both hidden 128 and intermediate 200: the per-channel zero points
    cannot be repeated over blocks, and the export takes the format's float dequantization, saying why."""
    checkpoint = tmp_path / "ckpt"
    write_compressed(checkpoint, "pack-quantized", 8, "channel", None, False,
                     cfg=dataclasses.replace(QUANT_CFG, intermediate_size=200))
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    extra = json.loads((onnx_dir / "graph.json").read_text())["extra"]
    assert "quantization" not in extra, extra
    record = extra["checkpoint_quantization"]
    assert record["exported_as"] == "float (dequantized by the format)", record
    assert record["reason"].startswith("per-channel zero points: no power-of-two block of 16 to 128 inputs divides "
                                       "every quantized linear's inputs (128, 200)"), record
    report = check_engine(build_engine(onnx_dir, tmp_path / "ort", "ort"), checkpoint, greedy_steps=4)
    assert not report.failures, report.failures


def test_quantize_option_refused_on_quantized_checkpoint(tmp_path):
    checkpoint = tmp_path / "ckpt"
    write_compressed(checkpoint, "pack-quantized", 4, "group", 32, True)
    with pytest.raises(MixtralTrtError, match=r"--quantize int4: the checkpoint is already quantized"):
        export_checkpoint(checkpoint, tmp_path / "onnx", quantize_experts="int4")
    assert not (tmp_path / "onnx").exists()


def test_act_order_codes_are_the_checkpoints(tmp_path):
    """An act-order GPTQ checkpoint keeps its codes: each expert's w2 columns sorted by their g_idx group, the
    same permutation applied to the rows of its w1 and w3, w1/w3 columns in the expert's own order (w13_order),
    the attention projections' columns behind a Gather; all equal to the reference's weights exactly, reordered by
    argsort of the checkpoint's own g_idx. The portable lowering runs the bodies to parity, and so does the trt
    lowering's plugins-cpu engine (MoEGemmSwiGLUQZ gathering x in each expert's order); `--experts moe` (QMoE, no
    per-expert input order) refuses in one line."""
    from safetensors.torch import load_file

    checkpoint = tmp_path / "ckpt"
    write_gptq(checkpoint, 4, 32, True, True, "gptq")
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    model = onnx.load(onnx_dir / "model.onnx", load_external_data=True)
    assert {n.op_type for n in model.graph.node if n.domain == "mixtral"} == {"MoERouter", "MoEExpertsQZP", "LinearQ"}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    g_idx = {k.removesuffix(".g_idx"): v.numpy() for k, v in load_file(checkpoint / "model.safetensors").items()
             if k.endswith(".g_idx")}
    reference = load_model(checkpoint, dtype=torch.float32)
    scheme, inter = QuantScheme(4, 32), reference.config.intermediate_size
    for i, layer in enumerate(reference.layers):
        name = f"model.layers.{i}.moe"
        w13 = scheme.dequantize(*(inits[f"{name}.w13.{s}"] for s in ("codes", "scales", "zeros")))
        w2 = scheme.dequantize(*(inits[f"{name}.w2.{s}"] for s in ("codes", "scales", "zeros")))
        for e in range(reference.config.num_experts):
            base = f"model.layers.{i}.block_sparse_moe.experts.{e}"
            down = np.argsort(g_idx[f"{base}.w2"], kind="stable")
            up = np.argsort(g_idx[f"{base}.w1"], kind="stable")
            assert np.array_equal(inits[f"{name}.w13.input_order"][e], up)
            ref13 = layer.moe.w13[e].detach().numpy()
            want = np.concatenate([ref13[:inter][down], ref13[inter:][down]])[:, up]
            assert np.array_equal(w13[e], want), (i, e, "w13")
            assert np.array_equal(w2[e], layer.moe.w2[e].detach().numpy()[:, down]), (i, e, "w2")
        q = f"model.layers.{i}.attn.wq.weight"
        order = np.argsort(g_idx[f"model.layers.{i}.self_attn.q_proj"], kind="stable")
        assert np.array_equal(inits[f"{q}.input_order"], order)
        assert np.array_equal(scheme.dequantize(inits[f"{q}.codes"], inits[f"{q}.scales"]),
                              layer.attn.wq.weight.detach().numpy()[:, order])
    report = check_engine(build_engine(onnx_dir, tmp_path / "portable", "portable"), checkpoint, greedy_steps=4)
    assert not report.failures and report.logits.max_rel < 1e-5, report.logits
    report = check_engine(build_engine(onnx_dir, tmp_path / "gqa", "ort-gqa"), checkpoint, greedy_steps=4)
    assert not report.failures, report.failures  # wo's Gather kept behind GroupQueryAttention
    with pytest.raises(MixtralTrtError, match=r"--experts moe: act-order experts .* build with --experts matmul"):
        build_engine(onnx_dir, tmp_path / "moe", "ort", experts="moe")
    assert not (tmp_path / "moe").exists()
    check_plugin_engine(onnx_dir, tmp_path / "plugins", checkpoint, ordered=1)


def check_plugin_engine(onnx_dir, engine_dir, checkpoint, ordered: int) -> None:
    """The trt lowering of a checkpoint with zero points, built as a plugins-cpu engine: its MoE layers are the
    zero-point plugins (`ordered` as the act-order field says), and the engine is at parity with the reference
    (the format's own dequantization), fp32 logits within 1e-5 and greedy decoding equal."""
    report = check_engine(build_engine(onnx_dir, engine_dir, "plugins-cpu"), checkpoint, greedy_steps=4)
    model = onnx.load(engine_dir / "model.onnx", load_external_data=False)
    gemms = [n for n in model.graph.node if n.op_type.startswith("MoEGemm")]
    assert {n.op_type for n in gemms} == {"MoEGemmSwiGLUQZ", "MoEGemmDownQZ"}, [n.op_type for n in gemms]
    assert {a.i for n in gemms for a in n.attribute if a.name == "ordered"} == {ordered}
    print(f"plugins-cpu (zero points, ordered={ordered}) vs reference: logits max rel {report.logits.max_rel:.2e}")
    assert not report.failures and report.logits.max_rel < 1e-5, report.logits


@pytest.mark.parametrize("strategy", ["channel", "tensor"])
def test_fp8_experts_are_the_checkpoints(strategy, tmp_path, monkeypatch):
    """A compressed-tensors FP8 checkpoint (its own compressor, per-channel and per-tensor scales) exports its
    experts as MoEExpertsF8: the e4m3 bytes times the per-row scales equal the reference's weights (the format's
    own dequantization) exactly. Its `ort` engine (the bytes converted exactly to float at build) gives the same
    figures as the float export of the same checkpoint (what every FP8 export was before), and its `trt` lowering's
    plugins-cpu engine (MoEGemmSwiGLUF8 / MoEGemmDownF8, the kernels under the interpreter) is at parity, fp32
    logits within 1e-5 and greedy decoding equal."""
    from mixtral_trt.exporter import quantize_stored
    from mixtral_trt.exporter.quantize_stored import weight_bytes
    from mixtral_trt.mixtral_ref.checkpoint import inspect_checkpoint
    from mixtral_trt.mixtral_ref.keymaps import plan as plan_entries

    checkpoint = tmp_path / "ckpt"
    write_compressed(checkpoint, "float-quantized", 8, strategy)
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    model = onnx.load(onnx_dir / "model.onnx", load_external_data=True)
    assert {n.op_type for n in model.graph.node if n.domain == "mixtral"} == {"MoERouter", "MoEExpertsF8"}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    info = inspect_checkpoint(checkpoint)  # what `inspect` counts: the exported weights, within a few constants
    counted, how = weight_bytes(info.quantized, plan_entries(info.layout, info.config), "fp32")
    assert how == "stored, FP8 experts" and 0 <= sum(a.nbytes for a in inits.values()) - counted < 1024, counted
    reference = load_model(checkpoint, dtype=torch.float32)
    for i, layer in enumerate(reference.layers):
        for name, param in ((f"model.layers.{i}.moe.w13", layer.moe.w13), (f"model.layers.{i}.moe.w2", layer.moe.w2)):
            codes, scales = (torch.from_numpy(inits[f"{name}.{s}"].copy()) for s in ("codes", "scales"))
            got = codes.view(torch.float8_e4m3fn).float() * scales[..., None]
            assert torch.equal(got, param.detach()), name
    ort_report = check_engine(build_engine(onnx_dir, tmp_path / "ort", "ort"), checkpoint, greedy_steps=4)
    assert not ort_report.failures, ort_report.failures
    monkeypatch.setattr(quantize_stored, "_fp8_refusal", lambda *args: "the float export, for comparison")
    float_dir = export_checkpoint(checkpoint, tmp_path / "onnx-float", max_seq=64, max_batch=2)
    assert "MoEExpertsF8" not in {n.op_type for n in onnx.load(float_dir / "model.onnx").graph.node}
    float_report = check_engine(build_engine(float_dir, tmp_path / "ort-float", "ort"), checkpoint, greedy_steps=4)
    assert ort_report.logits == float_report.logits, (ort_report.logits, float_report.logits)
    assert ort_report.layers == float_report.layers
    report = check_engine(build_engine(onnx_dir, tmp_path / "plugins", "plugins-cpu"), checkpoint, greedy_steps=4)
    model = onnx.load(tmp_path / "plugins" / "model.onnx", load_external_data=False)
    gemms = {n.op_type for n in model.graph.node if n.op_type.startswith("MoEGemm")}
    assert gemms == {"MoEGemmSwiGLUF8", "MoEGemmDownF8"}, gemms
    manifest = json.loads((tmp_path / "plugins" / "manifest.json").read_text())
    assert manifest["contract"]["extra"]["checkpoint_quantization"]["fp8_experts"] is True
    print(f"plugins-cpu (FP8 {strategy}) vs reference: logits max rel {report.logits.max_rel:.2e}")
    assert not report.failures and report.logits.max_rel < 1e-5, report.logits
    assert all(g.exact for g in report.greedy), [(g.matched, g.steps) for g in report.greedy]
