"""The per-GPU memory arithmetic behind docs/TENSOR_PARALLEL.md's plan, against counts done by hand."""

from __future__ import annotations

import pytest

from mixtral_trt.exporter.shard.memory import per_gpu
from mixtral_trt.mixtral_ref import get_preset


@pytest.mark.parametrize("name", ["mixtral-8x7b", "mixtral-8x22b"])
def test_one_gpu_in_bf16_holds_every_parameter(name):
    cfg = get_preset(name)
    assert per_gpu(cfg, 1).weights == cfg.num_parameters() * 2


def test_8x22b_on_8_gpus_by_hand():
    cfg = get_preset("mixtral-8x22b")  # H 6144, I 16384, 56 layers, 48 / 8 heads of 128, vocab 32768
    experts = 56 * 8 * 3 * 6144 * (16384 // 8) * 2
    attention = 56 * (2 * 6144 * 6 * 128 + 2 * 6144 * 1 * 128) * 2
    vocab = 2 * (32768 // 8) * 6144 * 2
    replicated = 56 * (2 * 6144 + 6144 * 8) * 2 + 6144 * 2
    m = per_gpu(cfg, 8)
    assert m.weights == experts + attention + vocab + replicated
    assert m.kv_per_token == 2 * 56 * 1 * 128 * 2  # one kv head per GPU
    int4 = per_gpu(cfg, 8, "int4", block=32)
    scales = 56 * 8 * (2 * 2048 * 6144 // 32 + 6144 * 2048 // 32) * 2
    assert int4.weights == experts // 4 + scales + attention + vocab + replicated


def test_kv_heads_are_replicated_beyond_eight_ranks():
    cfg = get_preset("mixtral-8x7b")
    assert per_gpu(cfg, 8).kv_per_token == per_gpu(cfg, 16).kv_per_token == 2 * 32 * 1 * 128 * 2
    assert per_gpu(cfg, 2).kv_tokens(80e9) > per_gpu(cfg, 1).kv_tokens(80e9) == 0  # 93 GB: no room on one GPU
