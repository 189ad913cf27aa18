"""The canonical graph: structure, contract, and numbers (ONNX Runtime through the function bodies)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt.common.contract import CONTRACT_FILE, MODEL_FILE, GraphContract
from support.models import feeds_for


def test_canonical_graph_structure(sliding_top3):
    model, out = sliding_top3
    cfg = model.config
    onnx.checker.check_model(str(out / MODEL_FILE), full_check=True)
    proto = onnx.load(str(out / MODEL_FILE), load_external_data=False)
    ops = Counter(f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain)
    assert ops == {"mixtral::MoERouter": cfg.num_layers, "mixtral::MoEExperts": cfg.num_layers}
    routers = [n for n in proto.graph.node if n.op_type == "MoERouter"]
    assert all(a.i == cfg.top_k for n in routers for a in n.attribute if a.name == "top_k")
    assert {(f.domain, f.name) for f in proto.functions} == {("mixtral", "MoERouter"), ("mixtral", "MoEExperts")}
    # weights live in external data, not in the protobuf
    assert (out / (MODEL_FILE + ".data")).stat().st_size > 4 * model.config.num_parameters() * 0.99
    assert (out / MODEL_FILE).stat().st_size < 1_000_000
    contract = GraphContract.load(out)
    assert (out / CONTRACT_FILE).is_file()
    for value, info in zip(proto.graph.input, contract.inputs, strict=True):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert value.name == info.name and dims == list(info.shape)
    assert [o.name for o in proto.graph.output] == contract.output_names
    assert contract.names("past_key", "inputs") == [f"past_key_values.{i}.key" for i in range(cfg.num_layers)]


def test_canonical_graph_runs_in_onnxruntime(sliding_top3):
    """ONNX Runtime inlines the function bodies: the canonical graph itself is executable."""
    import onnxruntime as ort

    model, out = sliding_top3
    contract = GraphContract.load(out)
    sess = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 13))
    names = ["logits", *contract.names("hidden"), *contract.names("router_logits")]
    got = dict(zip(names, sess.run(names, feeds_for(contract, ids)), strict=True))
    with torch.no_grad():
        ref = model.run(torch.from_numpy(ids))
    err = np.abs(got["logits"] - ref.logits.numpy()).max() / np.abs(ref.logits.numpy()).max()
    assert err < 1e-5, f"logits relative error {err:.2e}"
    for i in range(model.config.num_layers):
        h_err = np.abs(got[f"hidden.{i}"] - ref.hidden_states[i].numpy()).max()
        r_err = np.abs(got[f"router_logits.{i}"] - ref.router_logits[i].numpy()).max()
        assert h_err < 1e-4 and r_err < 1e-4, f"layer {i}: hidden {h_err:.2e}, router {r_err:.2e}"


def test_export_rejects_bad_options(sliding_top3, tmp_path):
    from mixtral_trt.common.contract import GraphContract
    from mixtral_trt.common.errors import MixtralTrtError

    model, _ = sliding_top3
    with pytest.raises(MixtralTrtError, match="--dtype 'fp8'"):
        GraphContract.for_config(model.config, "fp8", 1, 64)


def test_export_with_max_batch_1(tmp_path):
    """torch.export needs min < max for a dynamic dim; a batch limit of 1 must still export and run."""
    from mixtral_trt import runtime
    from mixtral_trt.common.errors import MixtralTrtError
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.export import export_model
    from support.models import SLIDING_TOP3, random_model

    model = random_model(SLIDING_TOP3.replace(num_layers=1))
    (tmp_path / "onnx").mkdir()
    export_model(model, tmp_path / "onnx", GraphContract.for_config(model.config, "fp32", max_batch=1, max_seq=64))
    eng = runtime.load(build_engine(tmp_path / "onnx", tmp_path / "engine", "ort"))
    ids = np.arange(1, 8)[None]
    with torch.no_grad():
        assert np.abs(eng.logits(ids) - model(torch.from_numpy(ids)).numpy()).max() < 1e-5
    with pytest.raises(MixtralTrtError, match="batch 2 exceeds the engine's max batch 1"):
        eng.logits(np.ones((2, 3), np.int64))
