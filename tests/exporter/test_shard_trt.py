"""TensorRT side of tensor parallelism: the rank graph's DistCollective nodes parse into TensorRT's
IDistCollectiveLayer and a rank plan builds (TensorRT-RTX's parser and builder run on CPU); the
multi-device build settings; the GPU suite (>= 2 GPUs, skipped here)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mixtral_trt.common.contract import MODEL_FILE, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.exporter.shard.trt import PREVIEW_FLAG, configure_multi_device
from support.models import SLIDING_TOP3, random_model

# The plugin kernels' AOT launch contract: hidden and per-rank intermediate sizes multiples of 16 (plugins/aot.py)
ALIGNED_TOP3 = SLIDING_TOP3.replace(hidden_size=48, intermediate_size=64)


def _tp2_export(tmp_path_factory, cfg):
    from mixtral_trt.exporter.shard.export import export_model_tensor_parallel

    model = random_model(cfg, seed=2)
    out = tmp_path_factory.mktemp("shard-trt")
    export_model_tensor_parallel(model, out, GraphContract.for_config(cfg, "fp32", 2, 64), 2)
    return model, out


@pytest.fixture(scope="module")
def tp2_export(tmp_path_factory):
    return _tp2_export(tmp_path_factory, SLIDING_TOP3)


@pytest.fixture(scope="module")
def tp2_aligned_export(tmp_path_factory):
    return _tp2_export(tmp_path_factory, ALIGNED_TOP3)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed")
def test_rank_graph_parses_into_dist_collective_layers_and_builds(tp2_export, tmp_path):
    """TensorRT's ONNX parser (TensorRT-RTX's, on CPU) imports every DistCollective node as a
    DIST_COLLECTIVE layer with num_ranks = nb_rank; the logits all-gather doubles dimension 0; the plan builds."""
    import onnx_ir as ir
    import tensorrt_rtx as trt

    from mixtral_trt.exporter.lowering import lower
    from mixtral_trt.exporter.shard.collectives import register_schemas
    from mixtral_trt.exporter.trt_build import PLAN_FILE, build_plan

    _, out = tp2_export
    register_schemas()
    rank = out / "rank1"
    ir.save(lower(ir.load(rank / MODEL_FILE), "portable"), tmp_path / MODEL_FILE, external_data=MODEL_FILE + ".data")
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(tmp_path / MODEL_FILE)), parser.get_error(0).desc()
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    dist = [layer for layer in layers if layer.type == trt.LayerType.DIST_COLLECTIVE]
    assert [layer.name for layer in dist] == ["dist_collective.embedding", "dist_collective.attention.0",
                                              "dist_collective.moe.0", "dist_collective.attention.1",
                                              "dist_collective.moe.1", "dist_collective.logits"]
    assert all(layer.num_ranks == 2 for layer in dist)
    vocab_rows = -(-SLIDING_TOP3.vocab_size // 2)
    assert dist[-1].get_input(0).shape[0] == vocab_rows and dist[-1].get_output(0).shape[0] == 2 * vocab_rows
    contract = GraphContract.load(rank)
    plan, info = build_plan(tmp_path / MODEL_FILE, contract, tmp_path, max_prefill=32, timing_cache=None,
                            trt_module=trt)
    assert plan == PLAN_FILE and (tmp_path / PLAN_FILE).stat().st_size > 100_000


class _Layer(SimpleNamespace):
    pass


def _fake_trt(preview: bool, dist_layers: int = 2):
    layer_type = SimpleNamespace(DIST_COLLECTIVE="dist", MATRIX_MULTIPLY="mm")
    trt = SimpleNamespace(LayerType=layer_type, __version__="10.16.1")
    if preview:
        trt.PreviewFeature = SimpleNamespace(**{PREVIEW_FLAG: "md"})
    layers = [_Layer(type="mm", num_ranks=1)] + [_Layer(type="dist", num_ranks=1) for _ in range(dist_layers)]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    config = SimpleNamespace(features={}, set_preview_feature=lambda f, on: config.features.__setitem__(f, on))
    return trt, network, config, layers


@pytest.mark.parametrize("preview", [True, False])  # TensorRT 10.16 needs the preview flag; 11 has none
def test_multi_device_settings(preview):
    trt, network, config, layers = _fake_trt(preview)
    assert configure_multi_device(trt, network, config, 4) == 2
    assert [layer.num_ranks for layer in layers] == [1, 4, 4]
    assert config.features == ({"md": True} if preview else {})


def test_multi_device_settings_refuse_a_tensorrt_without_dist_collective():
    trt, network, config, _ = _fake_trt(True, dist_layers=0)
    with pytest.raises(MixtralTrtError, match="without DistCollective layers"):
        configure_multi_device(trt, network, config, 2)
    with pytest.raises(MixtralTrtError, match="TensorRT >= 10.16"):
        configure_multi_device(SimpleNamespace(__version__="10.8"), network, config, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_tp2_trt_engine_matches_the_reference(tp2_aligned_export, tmp_path):
    """On 2 GPUs: per-rank plans with the plugins and DistCollective layers, NCCL, parity with mixtral_ref."""
    from mixtral_trt import runtime
    from mixtral_trt.exporter.build import build_engine

    model, out = tp2_aligned_export
    engine = runtime.load(build_engine(out, tmp_path / "engine", "trt", debug_outputs=True))
    try:
        ids = np.random.default_rng(0).integers(3, SLIDING_TOP3.vocab_size, (2, 9))
        want = model(torch.from_numpy(ids)).detach().numpy()
        got = engine.logits(ids)
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-3
    finally:
        engine.runner.close()
