"""Streaming export: peak RSS grows by much less than the checkpoint (the 6 GB Mixtral-8x7B-dimension run
is in the README; this is its CI-sized twin), and streamed bytes equal an in-memory export's."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from mixtral_trt.bench.export_memory import measure_export
from mixtral_trt.bench.synthetic import write_synthetic_checkpoint
from mixtral_trt.common.contract import MODEL_FILE
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref import get_preset, load_model


def test_peak_rss_grows_far_less_than_the_checkpoint(tmp_path):
    small = get_preset("tiny").replace(num_layers=1)
    big = get_preset("mixtral-8x7b").replace(num_layers=2, hidden_size=1024, intermediate_size=8192,
                                              num_heads=8, num_kv_heads=2)
    baseline = measure_export(write_synthetic_checkpoint(small, tmp_path / "small"), tmp_path / "o1")
    ckpt = write_synthetic_checkpoint(big, tmp_path / "big", shard_bytes=256 << 20)
    result = measure_export(ckpt, tmp_path / "o2")
    growth = result.peak_rss_bytes - baseline.peak_rss_bytes
    mib = 1 << 20
    print(f"checkpoint {result.checkpoint_bytes / mib:.0f} MiB, peak RSS {result.peak_rss_bytes / mib:.0f} MiB, "
          f"tiny-export baseline {baseline.peak_rss_bytes / mib:.0f} MiB")
    assert result.checkpoint_bytes > 900 * mib
    assert growth < 0.25 * result.checkpoint_bytes, (
        f"peak RSS grew {growth / mib:.0f} MiB over the baseline for a {result.checkpoint_bytes / mib:.0f} MiB "
        "checkpoint (bound: 25%)")
    assert result.within_bound
    onnx.checker.check_model(str(tmp_path / "o2" / MODEL_FILE))


def test_streamed_initializers_equal_the_checkpoint_tensors(tmp_path):
    cfg = get_preset("tiny").replace(vocab_size=500, num_experts=4)
    ckpt = write_synthetic_checkpoint(cfg, tmp_path / "ckpt", dtype=torch.float16, shard_bytes=200_000)
    out = export_checkpoint(ckpt, tmp_path / "onnx", dtype="fp32", max_seq=64)
    proto = onnx.load(str(out / MODEL_FILE))
    stored = {t.name.removeprefix("model."): onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    reference = load_model(ckpt, dtype=torch.float32).state_dict()
    for key, tensor in reference.items():
        np.testing.assert_array_equal(stored[key], tensor.numpy(), err_msg=key)
