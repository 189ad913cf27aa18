"""The GPU suite (`pytest -m gpu`): TensorRT engines with the sparse-dispatch plugins. Skips cleanly without
TensorRT and a CUDA GPU — on the machines that build this project it has never run.

    make gpu-install   # a venv over the machine's TensorRT and torch: the gpu and dev extras (bench/install_plan.py)
    pytest -m gpu -v
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.mixtral_ref.writer import init_checkpoint
from mixtral_trt.parity import check_engine
from support.engines import tiny_checkpoint

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("trt")


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_trt_engine_parity(root, dtype):
    """export -> build --backend trt (plugins, AOT kernels) -> parity against the fp32 reference."""
    ckpt = tiny_checkpoint(root)
    onnx_dir = export_checkpoint(ckpt, root / f"onnx-{dtype}", dtype=dtype, max_seq=256, max_batch=4,
                                 debug_outputs=True)
    engine_dir = build_engine(onnx_dir, root / f"engine-{dtype}", "trt", debug_outputs=True)
    report = check_engine(engine_dir, ckpt, greedy_steps=16)
    print(f"trt {dtype}: logits rel {report.logits.max_rel:.2e}, greedy {[g.matched for g in report.greedy]}")
    assert report.passed, report.failures


def test_trt_engine_decode_and_chunked_prefill(root):
    """Decode profile (T <= 8) and prefill profile, with a prompt longer than max_prefill (chunked)."""
    ckpt = tiny_checkpoint(root)
    onnx_dir = export_checkpoint(ckpt, root / "onnx-chunk", dtype="fp16", max_seq=512, max_batch=2)
    eng = runtime.load(build_engine(onnx_dir, root / "engine-chunk", "trt", max_prefill=64))
    ref = runtime.load(build_engine(onnx_dir, root / "engine-chunk-ort", "ort"))
    ids = np.random.default_rng(0).integers(3, 32000, (1, 150))
    err = np.abs(eng.logits(ids) - ref.logits(ids)).max() / np.abs(ref.logits(ids)).max()
    assert err < 2e-2, f"TensorRT (chunked prefill) vs ONNX Runtime fp16: {err:.2e}"
    prompt = ids[0, :20].tolist()
    greedy = dict(max_new_tokens=12, ignore_eos=True)
    assert eng.generate(prompt, **greedy).token_ids == ref.generate(prompt, **greedy).token_ids


def test_sparse_plugins_faster_than_dense(root):
    """Speed check, reported with figures: the plugin engine against the dense (portable) engine at a
    512-token prefill on the `small` preset, fp16."""
    ckpt = init_checkpoint(get_preset("small"), root / "small", seed=0)
    onnx_dir = export_checkpoint(ckpt, root / "onnx-small", dtype="fp16", max_seq=1024, max_batch=1)
    times = {}
    ids = np.random.default_rng(0).integers(3, 32000, (1, 512))
    for backend in ("trt", "trt-dense"):
        eng = runtime.load(build_engine(onnx_dir, root / f"engine-small-{backend}", backend))
        eng.logits(ids)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            eng.logits(ids)
        times[backend] = (time.perf_counter() - start) / 10
    print(f"prefill of 512 tokens, small preset, fp16: {times}")
    assert times["trt"] < times["trt-dense"], f"sparse plugins not faster than the dense engine: {times}"
