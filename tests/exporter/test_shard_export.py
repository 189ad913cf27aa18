"""`export --tensor-parallel N`: rank weights streamed from every checkpoint layout equal the in-memory
slices, the rank graphs carry TensorRT's DistCollective nodes, the contracts record the split, each rank's
files hold about 1/N of the weights, and world sizes that do not split are one-line errors."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.tensor_parallel import TensorParallel
from mixtral_trt.exporter.shard.export import streamed_rank_weights
from mixtral_trt.exporter.shard.weights import shard_state_dict
from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.mixtral_ref.checkpoint import plan_checkpoint
from mixtral_trt.mixtral_ref.writer import save_checkpoint
from support.models import SLIDING_TOP3, random_model

POLYGRAPHY_ATTRIBUTES = {"collective_operation", "reduce_op", "root", "nb_rank", "group_size", "groups"}


@pytest.mark.parametrize("layout", ["hub", "fused", "consolidated"])
@pytest.mark.parametrize("world_size, dtype", [(2, "fp32"), (4, "bf16")])
def test_streamed_rank_weights_equal_the_in_memory_slices(tmp_path, layout, world_size, dtype):
    cfg = SLIDING_TOP3  # vocab 211: the last rank's vocabulary rows are zero-padded
    model = random_model(cfg, seed=3)
    ckpt = save_checkpoint(model, cfg, tmp_path / layout, layout=layout, shards=2)
    _, entries, where = plan_checkpoint(ckpt)
    weights = streamed_rank_weights(cfg, entries, where, dtype, world_size)
    state = {k: v.to(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype])) for k, v in
             model.state_dict().items()}
    tp = TensorParallel(world_size)
    for rank in range(world_size):
        want = shard_state_dict(state, cfg, tp, rank)
        got = weights(rank)
        assert set(got) == set(want)
        for key, tensor in got.items():
            buf = io.BytesIO()
            tensor.tofile(buf) if hasattr(tensor, "tofile") else buf.write(tensor.tobytes())
            expected = want[key].contiguous().view(torch.uint8).numpy().tobytes() if want[key].dim() else \
                want[key].numpy().tobytes()
            assert tuple(tensor.shape) == tuple(want[key].shape), key
            assert buf.getvalue() == expected, f"rank {rank} {key}: streamed bytes differ from the slice"
        if layout == "hub":  # the per-expert reads quantization uses
            w13, w2 = got["layers.1.moe.w13"], got["layers.1.moe.w2"]
            np.testing.assert_array_equal(w13.expert(4), want["layers.1.moe.w13"][4].float().numpy())
            np.testing.assert_array_equal(w2.expert(2), want["layers.1.moe.w2"][2].float().numpy())


@pytest.fixture(scope="module")
def tp2_export(tmp_path_factory):
    """The tiny preset exported with --tensor-parallel 2 from a hub checkpoint (streamed)."""
    from mixtral_trt.exporter.export import export_checkpoint
    from mixtral_trt.mixtral_ref.writer import init_checkpoint

    root = tmp_path_factory.mktemp("tp2")
    ckpt = init_checkpoint(get_preset("tiny"), root / "ckpt", seed=1)
    return export_checkpoint(ckpt, root / "onnx", max_seq=128, max_batch=2, tensor_parallel=2)


def test_rank_graphs_carry_dist_collective_nodes(tp2_export):
    cfg = get_preset("tiny")
    whole = GraphContract.load(tp2_export)
    tp = TensorParallel.of(whole)
    assert (tp.world_size, tp.rank) == (2, None)
    assert [c.after for c in tp.collectives] == ["embedding", "attention.0", "moe.0", "attention.1", "moe.1", "logits"]
    assert whole.inputs[3].shape[1] == cfg.num_kv_heads  # the Engine's view: all kv heads
    for rank in range(2):
        rank_dir = tp2_export / f"rank{rank}"
        contract = GraphContract.load(rank_dir)
        assert TensorParallel.of(contract).rank == rank and contract.config == cfg
        assert contract.inputs[3].shape[1] == 1  # past_key_values.0.key: this rank's one kv head
        onnx.checker.check_model(str(rank_dir / "model.onnx"))
        model = onnx.load(str(rank_dir / "model.onnx"), load_external_data=False)
        nodes = [n for n in model.graph.node if n.op_type == "DistCollective"]
        assert len(nodes) == 2 * cfg.num_layers + 2 and all(n.domain == "" for n in nodes)
        for node in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert set(attrs) == POLYGRAPHY_ATTRIBUTES
            assert (attrs["nb_rank"], attrs["root"], attrs["group_size"], attrs["groups"]) == (2, -1, 0, [])
            assert (attrs["collective_operation"], attrs["reduce_op"]) in ((b"all_reduce", b"sum"),
                                                                          (b"all_gather", b"none"))
        assert [n.input[0] for n in nodes] == [c.input for c in tp.collectives]


def test_each_rank_holds_about_half_of_the_weights(tp2_export):
    cfg = get_preset("tiny")
    whole = cfg.num_parameters() * 4  # fp32
    for rank in range(2):
        size = (tp2_export / f"rank{rank}" / "model.onnx.data").stat().st_size
        replicated = cfg.num_layers * (2 * cfg.hidden_size + cfg.hidden_size * cfg.num_experts) * 4
        assert abs(size - whole / 2) <= replicated / 2 + 64, f"rank {rank}: {size} bytes of {whole}"


def test_world_size_that_does_not_split_is_a_one_line_error(cli, tmp_path):
    from mixtral_trt.mixtral_ref.writer import init_checkpoint

    ckpt = init_checkpoint(get_preset("tiny"), tmp_path / "ckpt", seed=0)
    result = cli("export", ckpt, tmp_path / "out", "--tensor-parallel", "3")
    assert result.code == 2, result
    assert result.err.startswith("error: --tensor-parallel 3") and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "out").exists()


def test_experts_form_is_refused_for_rank_graphs(cli, tp2_export, tmp_path):
    """Rank graphs keep the MoE op (lowering/ort.py): --experts on a tensor-parallel export is one line, exit 2."""
    result = cli("build", tp2_export, tmp_path / "engine", "--experts", "matmul")
    assert result.code == 2 and result.err.startswith("error: ") and "tensor-parallel export" in result.err, result
    assert result.err.count("\n") == 1 and not (tmp_path / "engine").exists()
