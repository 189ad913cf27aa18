"""int8 KV cache engines (`build --kv-cache int8`, ONNX Runtime concat caches).

Oracle: mixtral_ref with the same rounding of every key and value entering its cache (mixtral_ref/kv_quant.py),
independent of the engine's graph: logits within fp32's tolerance, greedy decoding equal. The engine against
itself where the cache must not matter: a prompt in chunks then decoded equals it whole, a left-padded batch
equals its rows alone, the prefix cache (blocks of codes + scales) and a Scheduler with chunked prefill change
no token. The cache's bytes are measured on its tensors against fp32 and fp16 engines of the same model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_model
from mixtral_trt.mixtral_ref import load_model
from mixtral_trt.mixtral_ref.generate import greedy_steps
from mixtral_trt.mixtral_ref.kv_quant import float_kv, int8_kv_, quantize_kv
from mixtral_trt.parity import TOLERANCES
from mixtral_trt.runtime.kv_cache import token_bytes
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import Scheduler
from support.engines import engine as build_tiny
from support.models import random_model

TOL = TOLERANCES["fp32"].logits_rel  # the engine and its reference round the same values the same way


@pytest.fixture(scope="module")
def int8_engine(tiny_ckpt, tiny_root):
    return runtime.load(build_tiny(tiny_ckpt, tiny_root, kv_cache="int8"))


@pytest.fixture(scope="module")
def int8_reference(tiny_ckpt):
    return int8_kv_(load_model(tiny_ckpt))


def _prompts(n: int = 3) -> list[list[int]]:
    rng = np.random.default_rng(11)
    return [rng.integers(3, 32000, length).tolist() for length in (7, 23, 41)[:n]]


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_the_contract_records_the_int8_cache(int8_engine):
    c = int8_engine.contract
    assert c.kv_cache == "int8"
    past = {t.name: t for t in c.inputs}
    assert past["past_key_values.0.key"].dtype == "int8"
    assert past["past_key_values.0.key_scale"].dtype == "float32"
    assert past["past_key_values.0.key_scale"].shape[-1] == 1
    assert c.cache_names("value") == [f"present.{i}.value" for i in range(c.config.num_layers)] + \
        [f"present.{i}.value_scale" for i in range(c.config.num_layers)]
    cache = int8_engine.empty_cache(2)
    assert [str(k.dtype) for k in cache.keys] == ["int8"] * c.config.num_layers + ["float32"] * c.config.num_layers


@torch.inference_mode()
def test_logits_match_the_int8_reference(int8_engine, int8_reference):
    """Left-padded batch of three prompts; the error against the float-cache reference is far larger."""
    prompts = _prompts()
    t = max(len(p) for p in prompts)
    ids, mask = np.zeros((3, t), np.int64), np.zeros((3, t), np.int64)
    for b, p in enumerate(prompts):
        ids[b, t - len(p):], mask[b, t - len(p):] = p, 1
    pos = np.maximum(mask.cumsum(-1) - 1, 0)
    got, _ = int8_engine.forward(ids, attention_mask=mask, position_ids=pos)
    real = mask.astype(bool)
    got = got["logits"][real]
    ref = int8_reference.run(*(torch.from_numpy(a) for a in (ids, pos, mask))).logits.numpy()[real]
    with float_kv(int8_reference):
        floats = int8_reference.run(*(torch.from_numpy(a) for a in (ids, pos, mask))).logits.numpy()[real]
    err, err_float = _rel(got, ref), _rel(got, floats)
    assert err < TOL, f"int8-KV engine vs int8-KV reference: logits rel. error {err:.2e} > {TOL:.0e}"
    assert err_float > 100 * err, f"vs the float-cache reference only {err_float:.2e}: is the cache int8?"


def test_greedy_equals_the_reference(int8_engine, int8_reference):
    for p in _prompts(2):
        want = [t for t, _ in (step for _, step in zip(range(16), greedy_steps(int8_reference, p), strict=False))]
        got = int8_engine.generate(p, max_new_tokens=16, ignore_eos=True).token_ids
        assert got == want, f"{len(p)}-token prompt: {got} != reference {want}"


def test_chunked_prefill_and_decode_equal_one_whole_call(int8_engine):
    p = _prompts()[2]
    whole, _ = int8_engine.forward(np.asarray([p]))
    first, cache = int8_engine.forward(np.asarray([p[:17]]))
    second, cache = int8_engine.forward(np.asarray([p[17:30]]), cache)
    logits = [first["logits"], second["logits"]]
    for token in p[30:]:  # decode one token at a time
        out, cache = int8_engine.forward(np.asarray([[token]]), cache)
        logits.append(out["logits"])
    err = _rel(np.concatenate(logits, axis=1), whole["logits"])
    assert err < 1e-6, f"prefill in pieces vs whole: logits rel. error {err:.2e}"
    _, full = int8_engine.forward(np.asarray([p]))
    for a, b in zip(cache.editable().keys + cache.editable().values, full.editable().keys + full.editable().values,
                    strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # the same codes and scales


def test_left_padded_batch_equals_rows_alone(int8_engine):
    prompts = _prompts()
    batch = int8_engine.generate(prompts, max_new_tokens=10, ignore_eos=True)
    for p, got in zip(prompts, batch, strict=True):
        alone = int8_engine.generate(p, max_new_tokens=10, ignore_eos=True)
        assert got.token_ids == alone.token_ids, f"{len(p)}-token row: batched {got.token_ids} != {alone.token_ids}"


def test_prefix_cache_and_chunked_prefill_change_nothing(tiny_ckpt, tiny_root):
    engine = runtime.load(build_tiny(tiny_ckpt, tiny_root, kv_cache="int8"))  # a private prefix cache
    rng = np.random.default_rng(2)
    shared = rng.integers(3, 32000, 70).tolist()
    prompts = [shared + rng.integers(3, 32000, n).tolist() for n in (5, 12, 9)]
    want = [engine.generate(p, max_new_tokens=8, ignore_eos=True).token_ids for p in prompts]
    cache = engine.enable_prefix_cache(0.01, block_size=16)
    try:
        got = [engine.generate(p, max_new_tokens=8, ignore_eos=True).token_ids for p in prompts]
        assert got == want
        assert cache.stats.hit_tokens == 2 * 64  # the 2nd and 3rd prompt start from 4 blocks of the 1st
        block = next(iter(cache._blocks.values()))
        layers = engine.config.num_layers
        assert [str(k.dtype) for k in block.keys] == ["int8"] * layers + ["float32"] * layers
        assert cache.block_bytes == 16 * token_bytes(engine.contract) == sum(
            a.nbytes for a in block.keys + block.values)
    finally:
        engine.disable_prefix_cache()
    sched = Scheduler(engine, prefix_cache_gb=0.01, prefill_chunk=16)
    requests = [sched.submit(p, SamplingParams(max_new_tokens=8, ignore_eos=True)) for p in prompts]
    sched.run_until_idle()
    assert [r.completion().token_ids for r in requests] == want
    assert sched.stats.prefill_chunks > sched.stats.prefills


# ---- bytes ------------------------------------------------------------------------------------------------
WIDE = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                     head_dim=128, num_experts=2, top_k=1, max_position_embeddings=256)  # Mixtral's head_dim


def _cache_bytes_per_token(engine, tokens: int) -> float:
    """Bytes of the actual cache tensors after a prefill of `tokens`, per token and layer."""
    _, cache = engine.forward(np.arange(3, 3 + tokens)[None] % engine.config.vocab_size)
    arrays = cache.editable().keys + cache.editable().values
    return sum(a.nbytes for a in arrays) / tokens / engine.config.num_layers


def test_cache_bytes_halved(tmp_path):
    """head_dim 128 (every Mixtral): int8 codes + one float32 scale per token and kv head against the same
    model's fp32 and fp16 caches."""
    model = random_model(WIDE, seed=1)
    got = {}
    for dtype, kv in (("fp32", "float"), ("fp16", "float"), ("fp32", "int8")):
        onnx_dir = tmp_path / f"onnx-{dtype}"
        if not onnx_dir.exists():
            onnx_dir.mkdir()
            export_model(model if dtype == "fp32" else random_model(WIDE, seed=1, dtype=dtype), onnx_dir,
                         GraphContract.for_config(WIDE, dtype, max_batch=1, max_seq=256))
        engine = runtime.load(build_engine(onnx_dir, tmp_path / f"{dtype}-{kv}", kv_cache=kv))
        got[dtype, kv] = _cache_bytes_per_token(engine, 100)
        assert got[dtype, kv] == token_bytes(engine.contract)
    int8, fp16, fp32 = got["fp32", "int8"], got["fp16", "float"], got["fp32", "float"]
    assert int8 == 2 * WIDE.num_kv_heads * (WIDE.head_dim + 4)  # K and V: 128 codes + a float32 scale
    assert int8 / fp32 <= 0.26 and int8 / fp16 <= 0.52, f"int8 {int8} vs fp32 {fp32}, fp16 {fp16} bytes/token/layer"


def test_quantize_kv_rounds_per_token_and_head():
    """The reference's rounding on its own: codes in [-127, 127], the largest |x| of each (row, head, token)
    at +-127, every value within half a step; an all-zero token keeps scale 0."""
    x = torch.randn(2, 3, 5, 16)
    x[0, 1, 2] = 0
    codes, scale = quantize_kv(x)
    assert codes.dtype == torch.int8 and scale.shape == (2, 3, 5, 1)
    assert int(codes.abs().amax(-1)[0, 1, 2]) == 0 and float(scale[0, 1, 2]) == 0
    peak = codes.abs().amax(-1)
    assert bool((peak[scale[..., 0] > 0] == 127).all())
    assert bool(((codes.float() * scale - x).abs() <= scale / 2 + 1e-7).all())
