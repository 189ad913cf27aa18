"""Weight-only int8 / int4 experts: the scheme (error bound, packing), `export --quantize`, and every
lowering (canonical function bodies, ort QMoE, portable) against the fake-quantized reference; the error
against the unquantized model is bounded and reported."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import MODEL_FILE, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.exporter.lowering.ort_quant import ACCURACY_LEVEL, activations_block
from mixtral_trt.mixtral_ref import get_preset, load_model
from mixtral_trt.mixtral_ref.quantized import fake_quantize_
from mixtral_trt.parity import check_engine
from mixtral_trt.parity.tolerance import INT8_ACTIVATIONS
from mixtral_trt.plugins import cpu_kernels
from support.engines import tiny_checkpoint

# Logits relative error against the UNQUANTIZED fp32 model on the tiny preset (measured: int8 in blocks of 32,
# experts + attention + LM head, 1.4e-2 with int8 activations; int4 in blocks of 32 1.7e-1; random Gaussian
# weights are a hard case for a symmetric grid).
QUANT_ERROR_BOUND = {"int8": 5e-2, "int4": 4e-1}


@pytest.mark.parametrize(("name", "block"), [("int8", 0), ("int8", 16), ("int4", 0), ("int4", 32)])
def test_scheme_error_bound_and_round_trip(name, block):
    scheme = QuantScheme.parse(name, block)
    w = np.random.default_rng(0).standard_normal((3, 8, 64)).astype(np.float32)
    codes, scales = scheme.quantize(w)
    assert codes.dtype == np.uint8 and codes.shape == (3, 8, 64 * scheme.bits // 8)
    assert scales.shape == ((3, 8, 64 // block) if block else (3, 8))
    err = np.abs(scheme.dequantize(codes, scales) - w)
    per_element_scale = np.repeat(scales, block, axis=-1) if block else scales[..., None]
    assert (err <= per_element_scale / 2 + 1e-6).all(), "rounding error exceeds half a step"


def test_int4_packs_the_even_element_in_the_low_nibble():
    scheme = QuantScheme(4, 0)
    w = np.array([[[7.0, -7.0, 1.0, 0.0]]], np.float32)  # scale 1: codes 15, 1, 9, 8
    codes, scales = scheme.quantize(w)
    assert scales.tolist() == [[1.0]] and codes.tolist() == [[[15 | (1 << 4), 9 | (8 << 4)]]]


def test_bad_schemes_are_refused():
    with pytest.raises(MixtralTrtError, match="--quantize 'int3'"):
        QuantScheme.parse("int3")
    with pytest.raises(MixtralTrtError, match="--quant-block 24"):
        QuantScheme.parse("int4", 24)
    with pytest.raises(MixtralTrtError, match="--quant-block 64 does not divide hidden_size = 48"):
        QuantScheme.parse("int4", 64).check_dims(48, "hidden_size")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("quant"))


def _fake_quant(ckpt, name, activations_block=None, block=None):
    scheme = QuantScheme.parse(name, block)
    return fake_quantize_(load_model(ckpt), scheme, "fp32", dense=bool(scheme.block_size),
                          activations_block=activations_block)


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_quantized_export_and_engines(ckpt, tmp_path, name):
    onnx_dir = export_checkpoint(ckpt, tmp_path / "onnx", max_seq=128, max_batch=2, quantize_experts=name)
    contract = GraphContract.load(onnx_dir)
    spec = contract.extra["quantization"]
    assert spec["bits"] == QuantScheme.parse(name).bits and spec["block_size"] == 32 and spec["dense"]
    proto = onnx.load(str(onnx_dir / MODEL_FILE), load_external_data=False)
    cfg = contract.config
    # one router + experts pair per layer; LinearQ for wq, wk, wv, wo of every layer and the LM head
    assert Counter(n.op_type for n in proto.graph.node if n.domain == "mixtral") == {
        "MoERouter": cfg.num_layers, "MoEExpertsQ": cfg.num_layers, "LinearQ": 4 * cfg.num_layers + 1}
    inits = {t.name: t for t in proto.graph.initializer}
    assert "model.layers.0.moe.w13" not in inits and "model.lm_head.weight" not in inits
    codes = inits["model.layers.0.moe.w13.codes"]
    assert codes.data_type == onnx.TensorProto.UINT8
    assert list(codes.dims) == [cfg.num_experts, 2 * cfg.intermediate_size, cfg.hidden_size * spec["bits"] // 8]
    head = inits["model.lm_head.weight.codes"]
    assert list(head.dims) == [cfg.vocab_size, cfg.hidden_size * spec["bits"] // 8]
    unquantized = export_checkpoint(ckpt, tmp_path / "onnx-fp32", max_seq=128, max_batch=2)
    ratio = (onnx_dir / f"{MODEL_FILE}.data").stat().st_size / (unquantized / f"{MODEL_FILE}.data").stat().st_size
    print(f"{name}: external data {ratio:.2f}x of fp32")
    ids = np.random.default_rng(0).integers(3, 32000, (2, 14))
    # the ort kernels round activations to int8 (ort_quant.ACCURACY_LEVEL): their oracle rounds them the same
    # way; the portable graph (function bodies) computes in float
    a8 = activations_block(spec["bits"], spec["block_size"])
    assert a8 == 32
    with torch.no_grad():
        refs = {None: _fake_quant(ckpt, name)(torch.from_numpy(ids)).numpy(),
                a8: _fake_quant(ckpt, name, a8)(torch.from_numpy(ids)).numpy()}
        ref = load_model(ckpt)(torch.from_numpy(ids)).numpy()
    ort_tol = INT8_ACTIVATIONS.logits_rel if a8 else 1e-5
    variants = [("ort matmul", a8, ort_tol), ("ort moe", a8, ort_tol), ("portable", None, 1e-5)]
    if cpu_kernels.library_path():  # our CPU kernels' MoEQ: the same int8-activation semantics
        variants.append(("ort ours", a8, ort_tol))
    for variant, block, tol in variants:
        backend, _, experts = variant.partition(" ")
        forms = {"cpu_kernels": "ours"} if experts == "ours" else {"experts": experts or None}
        eng = runtime.load(build_engine(onnx_dir, tmp_path / f"engine-{backend}-{experts}", backend, **forms))
        assert eng.manifest.backend_info.get("int8_activations_block") == block
        got = eng.logits(ids)
        err_q = float(np.abs(got - refs[block]).max() / np.abs(refs[block]).max())
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        print(f"{name} {variant}: vs dequantized reference {err_q:.2e}, vs unquantized {err:.2e}")
        assert err_q < tol, f"{name} {variant}: {err_q:.2e} against the dequantized reference"
        assert err < QUANT_ERROR_BOUND[name], f"{name} {variant}: {err:.2e} against the unquantized model"
    linears = 4 * cfg.num_layers + 1
    proto = onnx.load(str(tmp_path / "engine-ort-matmul" / MODEL_FILE), load_external_data=False)
    ops = Counter(n.op_type for n in proto.graph.node)  # ort_experts.py: a MatMulNBits pair per expert
    assert ops["MatMulNBits"] == linears + 2 * cfg.num_experts * cfg.num_layers and not ops["QMoE"], ops
    proto = onnx.load(str(tmp_path / "engine-ort-moe" / MODEL_FILE), load_external_data=False)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["QMoE"] == cfg.num_layers and ops["MatMulNBits"] == linears and not ops["LinearQ"]
    qmoe = next(n for n in proto.graph.node if n.op_type == "QMoE")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in qmoe.attribute}
    assert attrs["expert_weight_bits"] == spec["bits"] and attrs["block_size"] == 32
    assert attrs["accuracy_level"] == ACCURACY_LEVEL[spec["bits"]] and attrs["weights_prepacked"] == 0
    assert attrs["swiglu_limit"] == float("inf") and attrs["activation_alpha"] == 1.0


def test_per_channel_int8_quantizes_the_experts_only(ckpt, tmp_path):
    onnx_dir = export_checkpoint(ckpt, tmp_path / "onnx", max_seq=64, max_batch=2, quantize_experts="int8",
                                 quant_block=0)
    assert not GraphContract.load(onnx_dir).extra["quantization"]["dense"]
    eng = runtime.load(build_engine(onnx_dir, tmp_path / "engine", "ort"))
    assert "int8_activations_block" not in eng.manifest.backend_info  # dequantize + float GEMM: float activations
    assert eng.manifest.backend_info["experts"] == "moe"  # quantized experts: QMoE by default
    with pytest.raises(MixtralTrtError, match="--experts matmul: per-channel quantized experts"):
        build_engine(onnx_dir, tmp_path / "engine2", "ort", experts="matmul")
    assert not (tmp_path / "engine2").exists()
    ids = np.random.default_rng(1).integers(3, 32000, (1, 9))
    with torch.no_grad():
        ref = _fake_quant(ckpt, "int8", block=0)(torch.from_numpy(ids)).numpy()
    err = float(np.abs(eng.logits(ids) - ref).max() / np.abs(ref).max())
    assert err < 1e-5, f"{err:.2e}"
    proto = onnx.load(str(tmp_path / "engine" / MODEL_FILE), load_external_data=False)
    assert not any(n.op_type == "MatMulNBits" for n in proto.graph.node)


def test_streamed_quantized_export_equals_in_memory(ckpt, tmp_path):
    from mixtral_trt.exporter.export import export_model, with_quantization

    streamed = export_checkpoint(ckpt, tmp_path / "streamed", max_seq=64, max_batch=2, quantize_experts="int4")
    model = load_model(ckpt)
    contract = with_quantization(GraphContract.for_config(model.config, "fp32", 2, 64), "int4", None)
    (tmp_path / "memory").mkdir()
    export_model(model, tmp_path / "memory", contract)
    def arrays(directory):
        return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(directory / MODEL_FILE)).graph.initializer}

    a, b = arrays(streamed), arrays(tmp_path / "memory")
    for name in ("model.layers.1.moe.w13.codes", "model.layers.1.moe.w13.scales", "model.layers.0.moe.w2.codes"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_parity_of_a_quantized_engine(ckpt, tmp_path, cli):
    onnx_dir = export_checkpoint(ckpt, tmp_path / "onnx", max_seq=128, max_batch=2, quantize_experts="int8")
    eng = build_engine(onnx_dir, tmp_path / "engine", "ort")
    report = check_engine(eng, ckpt, greedy_steps=8)
    assert report.passed, report.failures
    assert report.tolerance == INT8_ACTIVATIONS  # int8 activations: judged against the rounding reference
    assert report.quantization["scheme"] == "int8-block32"
    assert 0 < report.quantization["logits_rel_vs_unquantized"] < QUANT_ERROR_BOUND["int8"]
    result = cli("parity", eng, "--checkpoint", ckpt, "--steps", "4")
    assert result.code == 0 and "int8-block32" in result.out, result.out


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_quantized_export_on_group_query_attention(ckpt, tmp_path, name):
    """ort-gqa over a quantized export: the attention projections stay quantized linears around one
    GroupQueryAttention per layer (q, k and v packed into one, lowering/gqa.py, and o: two a layer, plus the LM head;
    our LinearQ where our library is built, its default, else MatMulNBits), and the engine passes parity against
    the int8-activation reference."""
    onnx_dir = export_checkpoint(ckpt, tmp_path / "onnx", max_seq=128, max_batch=2, quantize_experts=name)
    eng = build_engine(onnx_dir, tmp_path / "engine", "ort-gqa")
    ops = [n.op_type for n in onnx.load(str(eng / MODEL_FILE), load_external_data=False).graph.node]
    layers = get_preset("tiny").num_layers
    linear = "LinearQ" if cpu_kernels.library_path() else "MatMulNBits"
    assert ops.count("GroupQueryAttention") == layers and ops.count(linear) == 2 * layers + 1, ops
    # quantized experts: our library's MoEQ where it is built (the default), else QMoE (lowering/ort.py, expert_form)
    assert ops.count("MoEQ" if cpu_kernels.library_path() else "QMoE") == layers, ops
    report = check_engine(eng, ckpt, greedy_steps=8)
    assert report.passed, report.failures
    assert report.tolerance == INT8_ACTIVATIONS and report.quantization["scheme"] == f"{name}-block32"


def test_quantize_cli_errors(ckpt, tmp_path, cli):
    result = cli("export", ckpt, tmp_path / "o", "--quantize", "int3")
    assert result.code == 2 and "--quantize 'int3'" in result.err and not (tmp_path / "o").exists()
    result = cli("export", ckpt, tmp_path / "o", "--quantize", "int4", "--quant-block", "128")
    assert result.code == 2 and "--quant-block 128 does not divide hidden_size = 64" in result.err



def test_qmoe_the_cuda_ep_cannot_run(ckpt, tmp_path, monkeypatch):
    """ONNX Runtime's CUDA QMoE takes fp16/bf16 and hidden / intermediate sizes that are multiples of 64: an
    engine outside that is refused at build time where onnxruntime has the CUDA EP (the engine is for CUDA), and
    elsewhere records why, so runtime.load keeps it on the CPU EP (refused with device='cuda')."""
    import onnxruntime

    from mixtral_trt.common.manifest import Manifest
    from mixtral_trt.exporter.export import with_quantization
    from mixtral_trt.exporter.lowering.ort_cuda import qmoe_cuda_problems

    onnx_dir = export_checkpoint(ckpt, tmp_path / "onnx", max_seq=64, max_batch=1, quantize_experts="int8")
    problems = qmoe_cuda_problems(GraphContract.load(onnx_dir))  # tiny: fp32, H 64, I 96
    assert problems == ["the export is fp32; the CUDA QMoE kernels take fp16 or bf16",
                        "intermediate_size 96 is not a multiple of 64"]
    cfg = load_model(ckpt).config.replace(intermediate_size=128)
    for dtype in ("fp16", "bf16"):
        assert qmoe_cuda_problems(with_quantization(GraphContract.for_config(cfg, dtype, 1, 64), "int4", None)) == []
    assert qmoe_cuda_problems(GraphContract.for_config(cfg, "fp32", 1, 64)) == []  # MoE (unquantized) runs anywhere

    engine = build_engine(onnx_dir, tmp_path / "cpu", "ort", experts="moe")
    assert Manifest.load(engine).backend_info["cuda_unsupported"] == problems
    with pytest.raises(MixtralTrtError, match="CUDA EP cannot run this engine's QMoE nodes .*device='cpu'"):
        runtime.load(engine, device="cuda")
    assert runtime.load(engine).runner.device == "cpu"

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(MixtralTrtError, match="CUDA QMoE cannot run this export: the export is fp32.*multiple of 64"):
        build_engine(onnx_dir, tmp_path / "gpu", "ort", experts="moe")
    assert not (tmp_path / "gpu").exists()
    # the per-expert form runs the experts as MatMulNBits pairs (ort_experts.py): no QMoE to refuse
    mm = build_engine(onnx_dir, tmp_path / "mm", "ort", experts="matmul")
    assert "cuda_unsupported" not in Manifest.load(mm).backend_info
