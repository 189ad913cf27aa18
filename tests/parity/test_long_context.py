"""Long context, verified: a prompt of 65,520 tokens (positions up to 65,527: past 8x7B's 32K, up to
8x22B's 64K, RoPE theta 1e6) through the canonical graph (ort) and the GroupQueryAttention graph (ort-gqa),
checked in chunks against mixtral_ref: logits at positions beyond 32K and at the end of the prompt, and an
8-step greedy continuation. With a sliding window too. The `ort` engine with an int8 KV cache (`build
--kv-cache int8`) likewise, against mixtral_ref rounding its cache the same way (kv_quant.int8_kv_). A one-layer,
one-head tiny config keeps the reference's quadratic attention near half a minute; the window case runs the
reference over the window's reach only (with one layer, a position's logits depend on the W tokens up to it), the
engines over all 65,520 tokens."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_model
from mixtral_trt.mixtral_ref.kv_quant import int8_kv_
from mixtral_trt.parity import TOLERANCES
from support.models import random_model

pytestmark = pytest.mark.slow

CONTEXT = 65_536
PROMPT = 65_520
STEPS = 8
CHUNK = 1024
MIDDLE = 40_960  # a chunk start beyond 32K whose logits are compared too
WINDOW = 4096
LONG = MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=1,
                     num_kv_heads=1, head_dim=16, num_experts=4, top_k=2, rope_theta=1e6,
                     max_position_embeddings=CONTEXT)


def _prompt() -> np.ndarray:
    return np.random.default_rng(0).integers(3, LONG.vocab_size, (1, PROMPT))  # [1, N]


LAST = PROMPT - PROMPT % CHUNK  # start of the last chunk


@torch.inference_mode()
def _reference(model, prompt: np.ndarray, start: int = 0, end: int = PROMPT) -> dict[str, np.ndarray]:
    """Logits of the chunks at MIDDLE and LAST that lie in [start, end), and (when end is the prompt's) the
    greedy continuation, running the reference from token `start` (with its true positions) in chunks."""
    past, out = None, {}
    for begin in range(start, end, CHUNK):
        ids = torch.from_numpy(prompt[:, begin:begin + CHUNK])
        positions = torch.arange(begin, begin + ids.shape[1])[None]
        res = model.run(ids, positions, past=past)
        past = res.present
        if begin in (MIDDLE, LAST):
            out[f"logits@{begin}"] = res.logits[0].float().numpy()
    if end < PROMPT:
        return out
    token, tokens, position = int(out[f"logits@{LAST}"][-1].argmax()), [], PROMPT
    for _ in range(STEPS):
        tokens.append(token)
        res = model.run(torch.tensor([[token]]), torch.tensor([[position]]), past=past)
        past, position, token = res.present, position + 1, int(res.logits[0, -1].argmax())
    out["greedy"] = np.array(tokens)
    return out


def _engine_run(engine, prompt: np.ndarray) -> dict[str, np.ndarray]:
    cache, out = None, {}
    for begin in range(0, PROMPT, CHUNK):
        got, cache = engine.forward(prompt[:, begin:begin + CHUNK], cache)
        if begin in (MIDDLE, LAST):
            out[f"logits@{begin}"] = got["logits"][0]
    token, tokens = int(out[f"logits@{LAST}"][-1].argmax()), []
    for _ in range(STEPS):
        tokens.append(token)
        got, cache = engine.forward(np.array([[token]]), cache)
        token = int(got["logits"][0, -1].argmax())
    out["greedy"] = np.array(tokens)
    return out


def _references(model, window: int | None) -> dict[str, np.ndarray]:
    prompt = _prompt()
    if window is None:
        return _reference(model, prompt)
    # only the window's reach matters: start W tokens before each compared stretch
    return _reference(model, prompt, start=LAST - WINDOW) | _reference(model, prompt, start=MIDDLE - WINDOW,
                                                                      end=MIDDLE + CHUNK)


@pytest.fixture(scope="module", params=[None, WINDOW], ids=["full", "window"])
def long_case(request, tmp_path_factory):
    """(config, reference results per KV cache kind (the int8 one computed when first asked for), export dir) for
    the full-attention and the sliding-window config."""
    cfg = LONG.replace(sliding_window=request.param)
    model = random_model(cfg, seed=9)
    onnx_dir = tmp_path_factory.mktemp(f"long-{request.param}")
    export_model(model, onnx_dir, GraphContract.for_config(cfg, "fp32", max_batch=1, max_seq=CONTEXT))
    refs = {"float": _references(model, request.param)}

    def reference(kv_cache: str) -> dict[str, np.ndarray]:
        if kv_cache not in refs:
            refs[kv_cache] = _references(int8_kv_(copy.deepcopy(model)), request.param)
        return refs[kv_cache]

    return cfg, reference, onnx_dir


@pytest.mark.parametrize(("backend", "kv_cache"), [("ort", "float"), ("ort-gqa", "float"), ("ort", "int8")])
def test_64k_prompt_matches_the_reference(long_case, backend, kv_cache, tmp_path):
    cfg, reference, onnx_dir = long_case
    ref = reference(kv_cache)
    engine = runtime.load(build_engine(onnx_dir, tmp_path / backend, backend, kv_cache=kv_cache))
    got = _engine_run(engine, _prompt())
    tol = TOLERANCES["fp32"].logits_rel
    for key in (f"logits@{MIDDLE}", f"logits@{LAST}"):
        err = np.abs(got[key] - ref[key]).max() / np.abs(ref[key]).max()
        assert err < tol, f"{backend} ({kv_cache} KV), window {cfg.sliding_window}: {key} rel. error {err:.2e} > " \
            f"{tol:.0e}"
    assert got["greedy"].tolist() == ref["greedy"].tolist(), \
        f"{backend} ({kv_cache} KV): {got['greedy']} vs {ref['greedy']}"
