"""The ort-gqa backend: each layer's attention one com.microsoft::GroupQueryAttention (shared KV buffer,
rotary inside the op), judged against mixtral_ref like every engine: parity (logits, per layer, left-padded
batch, greedy) in fp32 and fp16, with and without a sliding window, and a chunked prefill."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import MODEL_FILE
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.lowering.ort_experts import MOE_MARK
from mixtral_trt.parity import TOLERANCES
from mixtral_trt.parity.run import run_parity
from support.models import GQA_TOP3, export_dir, random_model

CASES = {  # name: (dtype, sliding window)
    "fp32-window": ("fp32", 5),
    "fp32-full": ("fp32", None),
    "fp16-window": ("fp16", 5),
}


@pytest.fixture(scope="module", params=list(CASES))
def gqa_engine(request, tmp_path_factory):
    """(fp32 reference, ort-gqa engine) for one case."""
    dtype, window = CASES[request.param]
    cfg = GQA_TOP3.replace(sliding_window=window)
    reference = random_model(cfg, seed=7)
    onnx_dir = export_dir(tmp_path_factory, random_model(cfg, seed=7, dtype=dtype), dtype, f"gqa-{request.param}",
                          max_seq=600)
    engine_dir = build_engine(onnx_dir, tmp_path_factory.mktemp("engines") / request.param, "ort-gqa")
    return reference, runtime.load(engine_dir)


def test_graph_holds_group_query_attention(gqa_engine):
    _, engine = gqa_engine
    model = onnx.load(str(engine.path / MODEL_FILE), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    attention_softmax = [n.name for n in model.graph.node if n.op_type == "Softmax" and MOE_MARK not in n.name]
    # (the routing's Softmax of the per-expert MatMuls stays: ort_experts.py)
    assert ops.count("GroupQueryAttention") == GQA_TOP3.num_layers and not attention_softmax, attention_softmax
    gqa = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa.attribute}
    assert attrs["do_rotary"] == 1 and attrs["kv_num_heads"] == GQA_TOP3.num_kv_heads
    assert attrs.get("local_window_size", -1) == (engine.config.sliding_window or -1)
    assert "position_ids" not in [i.name for i in model.graph.input]
    assert engine.contract.attention == "gqa" and engine.backend == "ort-gqa"
    assert not engine.contract.names("position_ids", "inputs")
    genai = json.loads((engine.path / "genai_config.json").read_text())
    assert genai["search"]["past_present_share_buffer"] is True
    assert "position_ids" not in genai["model"]["decoder"]["inputs"]


def test_parity_against_the_reference(gqa_engine):
    """Logits and per-layer errors on single prompts and a left-padded batch, greedy decoding."""
    reference, engine = gqa_engine
    report = run_parity(engine, reference, greedy_steps=12)
    tol = TOLERANCES[engine.dtype]
    assert report.passed, f"{engine.dtype}: {report.failures}"
    assert report.logits.max_rel <= tol.logits_rel
    assert all(g.exact or g.explained for g in report.greedy)
    assert all(lp.hidden is not None for lp in report.layers)


def test_chunked_prefill_and_decode_match_the_reference(gqa_engine):
    """A 300-token prompt in chunks of 128 (batch 1, the cache grows past its first 256 slots), then decode."""
    reference, engine = gqa_engine
    if engine.dtype != "fp32":  # over 300 tokens fp16 flips near-tie routes (the Concat engine alike): run_parity
        pytest.skip("fp16 is judged by run_parity, which tells near-tie routing flips from errors")
    prompt = np.random.default_rng(5).integers(3, GQA_TOP3.vocab_size, (1, 300))
    cache, pieces = None, []
    for start in range(0, 300, 128):
        out, cache = engine.forward(prompt[:, start:start + 128], cache)
        pieces.append(out["logits"])
    assert cache.capacity >= 300 and cache.lengths.tolist() == [300]
    with torch.inference_mode():
        ref = reference.run(torch.from_numpy(prompt))
    want = ref.logits.float().numpy()
    err = np.abs(np.concatenate(pieces, axis=1) - want).max() / np.abs(want).max()
    assert err < TOLERANCES[engine.dtype].logits_rel, f"chunked prefill rel. error {err:.2e}"
    token = np.array([[int(want[0, -1].argmax())]])
    out, cache = engine.forward(token, cache)
    with torch.inference_mode():
        step = reference.run(torch.from_numpy(token), past=ref.present).logits.float().numpy()
    err = np.abs(out["logits"] - step).max() / np.abs(step).max()
    assert err < TOLERANCES[engine.dtype].logits_rel, f"decode after chunked prefill rel. error {err:.2e}"


def test_the_window_is_applied(gqa_engine):
    """The engine differs from the same weights without a window (so the window checks above can fail)."""
    reference, engine = gqa_engine
    if engine.config.sliding_window is None:
        pytest.skip("full attention")
    unwindowed = random_model(engine.config.replace(sliding_window=None), seed=7)
    prompt = np.random.default_rng(1).integers(3, GQA_TOP3.vocab_size, (1, 20))
    with torch.inference_mode():
        full = unwindowed(torch.from_numpy(prompt)).float().numpy()
        windowed = reference(torch.from_numpy(prompt)).float().numpy()
    got = engine.logits(prompt)
    assert np.abs(got - windowed).max() < 0.1 * np.abs(got - full).max()


def test_head_dim_not_multiple_of_16_is_refused(sliding_top3, tmp_path):
    _, onnx_dir = sliding_top3  # head_dim 10
    with pytest.raises(MixtralTrtError, match="head_dim 10 is not a multiple of 16"):
        build_engine(onnx_dir, tmp_path / "engine", "ort-gqa")
    assert not (tmp_path / "engine").exists()
