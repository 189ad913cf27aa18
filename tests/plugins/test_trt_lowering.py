"""The `trt` lowering (plugin nodes and attributes from the specs) and `plugins-cpu` engines: the lowered
graph run by ONNX Runtime with every plugin node executed by the plugin kernels (interpreter)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import MODEL_FILE
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.parity import check_engine
from mixtral_trt.plugins import PLUGINS
from mixtral_trt.plugins.tiles import ALIGN_BLOCK
from support.engines import engine, tiny_checkpoint
from support.models import SLIDING_TOP3, export_dir, random_model


@pytest.fixture(scope="module")
def top3(tmp_path_factory):
    """(fp32 reference, plugins-cpu engine) for the 6-expert top-3 sliding-window config."""
    model = random_model(SLIDING_TOP3, seed=8)
    onnx_dir = export_dir(tmp_path_factory, model, "fp32", "top3")
    return model, runtime.load(build_engine(onnx_dir, tmp_path_factory.mktemp("pcpu") / "engine", "plugins-cpu"))


def test_lowered_graph_has_the_plugin_nodes(top3):
    model, eng = top3
    cfg = model.config
    proto = onnx.load(str(eng.path / MODEL_FILE), load_external_data=False)
    plugin_nodes = [n for n in proto.graph.node if n.op_type in PLUGINS]
    unquantized = [name for name in PLUGINS if not name.endswith(("Q", "QZ", "F8"))]
    assert Counter(n.op_type for n in plugin_nodes) == {name: cfg.num_layers for name in unquantized}
    assert not [n for n in proto.graph.node if n.domain == "mixtral"] and not proto.functions
    for node in plugin_nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        spec = PLUGINS[node.op_type]
        assert attrs["plugin_namespace"] == b"mixtral" and attrs["plugin_version"] == b"1" and attrs["aot"] == 1
        fields = {f.name for f in spec.fields}
        assert fields <= set(attrs), f"{node.op_type}: {attrs}"
        expected = {"top_k": cfg.top_k, "num_experts": cfg.num_experts, "block_size": ALIGN_BLOCK}
        assert all(attrs[f] == expected[f] for f in fields), f"{node.op_type}: {attrs}"
    assert sum(n.op_type == "ReduceSum" for n in proto.graph.node) >= cfg.num_layers  # the k-way combines


def test_plugins_cpu_engine_matches_reference(top3):
    model, eng = top3
    ids = np.random.default_rng(0).integers(0, SLIDING_TOP3.vocab_size, (2, 19))
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).numpy()
    err = float(np.abs(eng.logits(ids) - ref).max() / np.abs(ref).max())
    print(f"plugins-cpu vs mixtral_ref (top-3 of 6, sliding window): logits relative error {err:.2e}")
    assert err < 1e-5, f"plugins-cpu logits relative error {err:.2e}"
    out, cache = eng.forward(ids[:, :12])
    steps = [out["logits"]]
    for t in range(12, 19):
        out, cache = eng.forward(ids[:, t : t + 1], cache)
        steps.append(out["logits"])
    err = np.abs(np.concatenate(steps, axis=1) - eng.logits(ids)).max()
    assert err < 1e-5, f"plugins-cpu prefill + decode vs full sequence: {err:.2e}"


def test_plugins_cpu_parity_on_the_tiny_preset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcpu-parity")
    ckpt = tiny_checkpoint(root)
    report = check_engine(engine(ckpt, root, "plugins-cpu"), ckpt, greedy_steps=6)
    assert report.passed, report.failures
    assert report.logits.max_rel < 1e-5 and all(g.exact for g in report.greedy)


def test_hf_checkpoint_top3_of_6_matches_hf(hf_checkpoint, tmp_path):
    """Acceptance: an HF-written checkpoint (top-3 of 6 experts, sizes not used elsewhere) -> export ->
    build --backend plugins-cpu -> Engine.logits vs HF logits, relative error < 1e-4."""
    ckpt = hf_checkpoint(seed=21, num_local_experts=6, num_experts_per_tok=3, hidden_size=44, head_dim=14,
                         intermediate_size=36, sliding_window=9)
    onnx_dir = export_checkpoint(ckpt.path, tmp_path / "onnx", max_seq=64, max_batch=2)
    eng = runtime.load(build_engine(onnx_dir, tmp_path / "engine", "plugins-cpu"))
    ids = np.random.default_rng(5).integers(0, 131, (2, 17))
    with torch.no_grad():
        ref = ckpt.model(torch.from_numpy(ids)).logits.numpy()
    err = float(np.abs(eng.logits(ids) - ref).max() / np.abs(ref).max())
    print(f"plugins-cpu vs HF (top-3 of 6): logits relative error {err:.2e}")
    assert err < 1e-4, f"plugins-cpu vs HF logits relative error {err:.2e}"


def test_plugins_cpu_refuses_fp16_exports(tmp_path_factory, tmp_path):
    onnx_dir = export_dir(tmp_path_factory, random_model(SLIDING_TOP3.replace(num_layers=1), dtype="fp16"), "fp16",
                          "fp16-pcpu")
    with pytest.raises(MixtralTrtError, match="plugins-cpu builds fp32 exports"):
        build_engine(onnx_dir, tmp_path / "e", "plugins-cpu")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_plugins_cpu_quantized_engine(tmp_path_factory, name):
    """The trt lowering of MoEExpertsQ (the ...Q plugins, dequantizing in the kernel) on CPU against the
    dequantized reference."""
    from mixtral_trt.common.quant import QuantScheme
    from mixtral_trt.mixtral_ref import load_model
    from mixtral_trt.mixtral_ref.quantized import fake_quantize_

    root = tmp_path_factory.mktemp(f"pcpu-{name}")
    ckpt = tiny_checkpoint(root)
    onnx_dir = export_checkpoint(ckpt, root / "onnx", max_seq=64, max_batch=2, quantize_experts=name)
    eng = runtime.load(build_engine(onnx_dir, root / "engine", "plugins-cpu"))
    proto = onnx.load(str(eng.path / MODEL_FILE), load_external_data=False)
    # the experts become the ...Q plugins; the quantized attention and LM head (LinearQ) are inlined from
    # their function bodies (dequantize + MatMul) at build
    assert Counter(n.op_type for n in proto.graph.node if n.op_type.endswith("Q")) == {
        "MoEGemmSwiGLUQ": 2, "MoEGemmDownQ": 2}
    ids = np.random.default_rng(1).integers(3, 32000, (1, 11))
    with torch.no_grad():
        ref = fake_quantize_(load_model(ckpt), QuantScheme.parse(name), "fp32", dense=True)(
            torch.from_numpy(ids)).numpy()
    err = float(np.abs(eng.logits(ids) - ref).max() / np.abs(ref).max())
    assert err < 1e-5, f"plugins-cpu {name}: {err:.2e} against the dequantized reference"
