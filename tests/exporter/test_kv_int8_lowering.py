"""`build --kv-cache int8` (exporter/lowering/kv_int8.py): the lowered graph's I/O is the contract's (int8 codes,
float32 scales), a sliding-window model's portable engine matches mixtral_ref rounding its cache the same way,
and every combination it does not support is refused in one line with nothing written."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import MODEL_FILE
from mixtral_trt.common.manifest import MANIFEST_FILE
from mixtral_trt.common.tensor_parallel import RANK_DIR
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.mixtral_ref.kv_quant import int8_kv_
from mixtral_trt.parity import TOLERANCES
from support.cli_checks import one_line_error


def test_graph_io_is_the_contracts_and_matches_the_reference(sliding_top3, tmp_path):
    model, onnx_dir = sliding_top3
    engine = runtime.load(build_engine(onnx_dir, tmp_path / "e", "portable", kv_cache="int8"))
    graph = onnx.load(tmp_path / "e" / MODEL_FILE, load_external_data=False).graph
    c = engine.contract
    for io, tensors in ((graph.input, c.inputs), (graph.output, c.outputs)):
        got = {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name for v in io}
        assert got == {t.name: t.dtype for t in tensors}
    assert not (tmp_path / "e" / "genai_config.json").exists()  # onnxruntime-genai knows no scale tensors
    users = {}  # tensor -> the op types reading it
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for i in range(c.config.num_layers):  # the scales fold into scores and probabilities: no [.., S, D] multiply
        for kind, chain in (("key", ["Cast", "Transpose", "MatMul"]), ("value", ["Cast", "MatMul"])):
            name, ops = f"present.{i}.{kind}", []
            while len(users.get(name, [])) == 1 and len(ops) < len(chain):
                ops.append(users[name][0].op_type)
                name = users[name][0].output[0]
            assert ops == chain, (i, kind, ops)
    ids = np.random.default_rng(4).integers(3, model.config.vocab_size, (1, 60))  # beyond the window
    with torch.inference_mode():
        ref = int8_kv_(copy.deepcopy(model))(torch.from_numpy(ids)).numpy()
    err = np.abs(engine.logits(ids) - ref).max() / np.abs(ref).max()
    assert err < TOLERANCES["fp32"].logits_rel, f"int8-KV portable engine vs int8-KV reference: {err:.2e}"


@pytest.mark.parametrize(("args", "words"), [
    (("--kv-cache", "fp8"), ("--kv-cache 'fp8'", "float, int8")),
    (("--backend", "ort-gqa", "--kv-cache", "int8"), ("ort-gqa", "per-token")),
    (("--backend", "trt", "--kv-cache", "int8"), ("--backend trt", "docs/GPU.md")),
    (("--backend", "plugins-cpu", "--kv-cache", "int8"), ("--backend plugins-cpu",)),
])
def test_unsupported_combinations_are_one_line_errors(sliding_top3, tmp_path, cli, args, words):
    _, onnx_dir = sliding_top3
    one_line_error(cli("build", onnx_dir, tmp_path / "e", *args), 2, *words)
    assert list(tmp_path.iterdir()) == []


def test_tensor_parallel_exports_are_refused(tmp_path, cli):
    export = tmp_path / "tp"
    (export / RANK_DIR.format(rank=0)).mkdir(parents=True)
    one_line_error(cli("build", export, tmp_path / "e", "--kv-cache", "int8"), 2, "tensor-parallel", "--kv-cache")
    assert not (tmp_path / "e").exists()


def test_an_unknown_cache_kind_in_the_manifest_is_refused(sliding_top3, tmp_path, cli):
    """An engine whose contract names a cache kind this runtime does not know (a newer build's) is one line."""
    _, onnx_dir = sliding_top3
    out = build_engine(onnx_dir, tmp_path / "e", "portable", kv_cache="int8")
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["contract"]["extra"]["kv_cache"] = "fp8"
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    one_line_error(cli("generate", out, "--prompt", "hi"), 2, "kv_cache 'fp8'", MANIFEST_FILE)
