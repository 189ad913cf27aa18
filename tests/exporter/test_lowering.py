"""Each lowering (built into an engine) against mixtral_ref: fp32 tight, fp16 / bf16 with stated tolerances;
prefill + decode through the engine equals full-sequence logits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import MODEL_FILE, GraphContract
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.lowering.ort import EXPERT_PARTS
from support import bf16_eval
from support.cpu_kernels import library_or_skip
from support.models import SLIDING_TOP3, export_dir, feeds_for, random_model

# Logits relative error (max abs error / max |fp32 reference|) allowed per engine dtype; measured on this
# config: fp32 ~2e-7, fp16 ~1.2e-3, bf16 ~1.1e-2.
LOGITS_REL_TOL = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 5e-2}


@pytest.fixture(scope="module", params=["ort matmul", "ort moe", "ort ours", "portable"])
def engine(request, sliding_top3, tmp_path_factory):
    """`ort` in both of ONNX Runtime's expert forms (per-expert MatMuls; com.microsoft::MoE), with our CPU kernels
    (H = 40 here: the kernels' SIMD tails), and `portable`."""
    model, onnx_dir = sliding_top3
    backend, _, experts = request.param.partition(" ")
    out = tmp_path_factory.mktemp(f"engine-{backend}-{experts}") / "engine"
    if experts == "ours":
        library_or_skip()
        build_engine(onnx_dir, out, backend, cpu_kernels="ours")
    else:
        build_engine(onnx_dir, out, backend, experts=experts or None)
    return model, runtime.load(out)


def rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float32) - ref).max() / np.abs(ref).max())


def test_lowered_graph_structure(engine):
    model, eng = engine
    proto = onnx.load(str(eng.path / MODEL_FILE), load_external_data=False)
    ops = Counter(f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain)
    all_ops = Counter(n.op_type for n in proto.graph.node)
    if eng.backend == "ort":  # RMSNorms fused (ort_fuse.py)
        assert all_ops["SimplifiedLayerNormalization"] == 2 * model.config.num_layers + 1 and not all_ops["Pow"]
    if eng.manifest.backend_info.get("experts") == "matmul":  # ort_experts.py: a MatMul pair per expert
        assert not ops, ops
        cfg = model.config
        experts = [n for n in proto.graph.node if n.op_type == "MatMul" and ".expert" in n.name]
        assert len(experts) == 2 * cfg.num_experts * cfg.num_layers, len(experts)
        assert all_ops["TopK"] == all_ops["ScatterElements"] == cfg.num_layers
    elif eng.manifest.backend_info.get("experts") == "cpu_kernels":  # one node of our library per layer
        layers, linears = model.config.num_layers, eng.manifest.backend_info["cpu_kernels"]["linears"]
        lin = ("lm_head" in linears) + 4 * layers * ("projections" in linears)  # our Linear nodes, by default all
        assert ops == {"mixtral.cpu::MoE": layers, **({"mixtral.cpu::Linear": lin} if lin else {})}, ops
    elif eng.backend == "ort":
        assert ops == {"com.microsoft::MoE": model.config.num_layers}
        moe = next(n for n in proto.graph.node if n.op_type == "MoE")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in moe.attribute}
        assert attrs["k"] == model.config.top_k * EXPERT_PARTS and attrs["swiglu_fusion"] == 1  # ort_split.py
        assert attrs["activation_alpha"] == 1.0 and attrs["activation_beta"] == 0.0
    else:
        assert not ops, f"portable graph still has custom-domain nodes: {ops}"
    assert not proto.functions
    assert [o.name for o in proto.graph.output] == eng.contract.output_names


def test_engine_logits_match_reference(engine):
    model, eng = engine
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (3, 17))
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).numpy()
    err = rel(eng.logits(ids), ref)
    assert err < LOGITS_REL_TOL["fp32"], f"{eng.backend}: logits relative error {err:.2e}"


def test_prefill_then_decode_equals_full_sequence(engine):
    """The sliding window (5) is shorter than the sequence, so the cached path must apply it too."""
    model, eng = engine
    ids = np.random.default_rng(2).integers(0, model.config.vocab_size, (2, 14))
    full = eng.logits(ids)
    out, cache = eng.forward(ids[:, :6])
    steps = [out["logits"]]
    for t in range(6, 14):
        out, cache = eng.forward(ids[:, t : t + 1], cache)
        steps.append(out["logits"])
    assert cache.length == 14
    err = np.abs(np.concatenate(steps, axis=1) - full).max()
    assert err < 1e-5, f"{eng.backend}: prefill+decode vs full logits max abs error {err:.2e}"


def test_left_padded_batch_equals_unpadded_rows(engine):
    model, eng = engine
    rng = np.random.default_rng(3)
    rows = [rng.integers(0, model.config.vocab_size, n) for n in (9, 4)]
    t = max(len(r) for r in rows)
    ids = np.zeros((2, t), np.int64)
    mask = np.zeros((2, t), np.int64)
    for b, r in enumerate(rows):
        ids[b, t - len(r):], mask[b, t - len(r):] = r, 1
    pos = np.maximum(mask.cumsum(-1) - 1, 0)
    out, _ = eng.forward(ids, attention_mask=mask, position_ids=pos)
    for b, r in enumerate(rows):
        alone = eng.logits(r[None])
        err = np.abs(out["logits"][b, t - len(r):] - alone[0]).max()
        assert err < 1e-5, f"{eng.backend}: padded row {b} differs from its unbatched run by {err:.2e}"


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    return export_dir(tmp_path_factory, random_model(SLIDING_TOP3, seed=4, dtype="fp16"), "fp16", "fp16")


@pytest.mark.parametrize("backend", ["ort", "ort matmul", "portable"])
def test_fp16_engine_matches_fp32_reference(backend, fp16_export, tmp_path_factory):
    ref_model = random_model(SLIDING_TOP3, seed=4)
    onnx_dir = fp16_export
    out = tmp_path_factory.mktemp("fp16-engine") / "engine"
    name, _, experts = backend.partition(" ")
    build_engine(onnx_dir, out, name, experts=experts or None)
    eng = runtime.load(out)
    ids = np.random.default_rng(5).integers(0, SLIDING_TOP3.vocab_size, (2, 11))
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).numpy()
    err = rel(eng.logits(ids), ref)
    print(f"fp16 {backend}: logits relative error {err:.2e}")
    assert err < LOGITS_REL_TOL["fp16"], f"fp16 {backend}: logits relative error {err:.2e}"


def test_bf16_graph_matches_fp32_reference(tmp_path_factory):
    """ONNX Runtime's CPU kernels lack bf16; onnx.reference executes the bf16 portable graph instead, each op in
    float32 rounded to bf16 once (support/bf16_eval.py: what bf16 kernels do, whatever ml_dtypes' promotion)."""
    import ml_dtypes
    import onnx_ir as ir

    from mixtral_trt.exporter.lowering import lower

    ref_model = random_model(SLIDING_TOP3, seed=6)
    onnx_dir = export_dir(tmp_path_factory, random_model(SLIDING_TOP3, seed=6, dtype="bf16"), "bf16", "bf16")
    contract = GraphContract.load(onnx_dir)
    portable = tmp_path_factory.mktemp("bf16-portable") / MODEL_FILE
    ir.save(lower(ir.load(onnx_dir / MODEL_FILE), "portable"), portable, external_data=MODEL_FILE + ".data")
    ids = np.random.default_rng(7).integers(0, SLIDING_TOP3.vocab_size, (1, 9))
    feeds = feeds_for(contract, ids)
    feeds = {k: v.astype(ml_dtypes.bfloat16) if k.startswith("past") else v for k, v in feeds.items()}
    (logits,) = bf16_eval.evaluator(portable).run(["logits"], feeds)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).numpy()
    err = rel(np.asarray(logits, np.float32), ref)
    print(f"bf16 portable: logits relative error {err:.2e}")
    assert err < LOGITS_REL_TOL["bf16"], f"bf16 portable: logits relative error {err:.2e}"
