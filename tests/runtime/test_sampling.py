"""Sampling: the logits processors against HF transformers' (the oracle), draws against the softmax they
define, seeds, and every invalid setting."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime import sampling
from mixtral_trt.runtime.sampling import Sampler, SamplingParams, draw, processed_logits, softmax


def _hf_processed(logits: np.ndarray, seen: list[int], p: SamplingParams) -> np.ndarray:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    chain = [RepetitionPenaltyLogitsProcessor(p.repetition_penalty)] if p.repetition_penalty != 1.0 else []
    chain += [TemperatureLogitsWarper(p.temperature)]
    chain += [TopKLogitsWarper(p.top_k)] if p.top_k else []
    chain += [TopPLogitsWarper(p.top_p)] if p.top_p < 1.0 else []
    scores = torch.tensor(logits, dtype=torch.float64)[None]
    return LogitsProcessorList(chain)(torch.tensor([seen]), scores)[0].numpy()


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7),
    dict(temperature=1.3, top_k=7),
    dict(temperature=0.9, top_p=0.8),
    dict(temperature=0.6, top_k=20, top_p=0.5, repetition_penalty=1.3),
    dict(temperature=1.0, top_p=0.05),  # keeps only the most likely token
    dict(temperature=2.0, repetition_penalty=0.7),
])
def test_processors_equal_hf_transformers(settings):
    rng = np.random.default_rng(0)
    params = SamplingParams(**settings)
    for trial in range(5):
        logits = rng.normal(0, 3, 64)
        seen = rng.integers(0, 64, 10).tolist()
        ours, hf = processed_logits(logits, seen, params), _hf_processed(logits, seen, params)
        kept, hf_kept = np.isfinite(ours), np.isfinite(hf)
        assert (kept == hf_kept).all(), f"trial {trial}: kept {np.flatnonzero(kept)} vs HF {np.flatnonzero(hf_kept)}"
        np.testing.assert_allclose(ours[kept], hf[kept], rtol=1e-12, err_msg=f"trial {trial}")


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.99, 0.9999])
def test_top_p_on_a_real_vocabulary_equals_hf_transformers(top_p, monkeypatch):
    """V = 32000: sharp distributions take the candidate path (the few most likely tokens hold p), flat ones
    the full sort; both keep exactly HF's set. With ties (rounded logits; torch's sort does not order them), the
    candidate path keeps exactly what the full stable sort keeps."""
    rng = np.random.default_rng(3)
    params = SamplingParams(temperature=1.0, top_p=top_p)
    for scale in (0.3, 1.0, 4.0, 12.0):
        logits = rng.normal(0, scale, 32000)
        kept = np.isfinite(processed_logits(logits, [], params))
        hf_kept = np.isfinite(_hf_processed(logits, [], params))
        assert (kept == hf_kept).all(), f"scale {scale}: kept {kept.sum()} tokens, HF {hf_kept.sum()}"
        tied = np.round(logits, 1)
        fast = np.isfinite(processed_logits(tied, [], params))
        with monkeypatch.context() as m:
            m.setattr(sampling, "TOP_P_CANDIDATES", 10**6)  # the full sort
            full = np.isfinite(processed_logits(tied, [], params))
        assert (fast == full).all(), f"ties, scale {scale}: kept {fast.sum()} tokens, full sort {full.sum()}"


@pytest.mark.parametrize("vocab", [32000, 32768, 1000, 7])
def test_draw_is_numpy_choice_with_the_same_generator(vocab):
    """The two-level inverse CDF draws numpy's token for the same generator state, also with masked tokens
    (-inf, never drawn) and vocabularies that are not whole blocks."""
    rng = np.random.default_rng(vocab)
    for trial in range(3):
        logits = rng.normal(0, (0.5, 3.0, 10.0)[trial], vocab)
        if trial:
            logits[rng.random(vocab) < 0.9] = -np.inf  # a grammar's mask, or top-k / top-p
            logits[0] = 0.0
        ours, numpy_choice = np.random.default_rng(trial), np.random.default_rng(trial)
        tokens = [draw(ours, logits) for _ in range(500)]
        assert tokens == [int(numpy_choice.choice(vocab, p=softmax(logits))) for _ in range(500)], (vocab, trial)
        assert np.isfinite(logits[tokens]).all()


def test_draws_follow_the_processed_distribution():
    logits = np.array([2.0, 1.5, 0.3, -1.0, 0.9, -3.0])
    params = SamplingParams(temperature=0.8, top_k=4, seed=0)
    expected = softmax(processed_logits(logits, [], params))
    sampler = Sampler(params, [])
    draws = np.array([sampler(logits) for _ in range(20000)])
    freq = np.bincount(draws, minlength=6) / draws.size
    assert freq[np.isclose(expected, 0)].sum() == 0, f"drew a filtered token: {freq}"
    assert np.abs(freq - expected).max() < 0.015, f"frequencies {freq.round(4)} vs probabilities {expected.round(4)}"


def test_greedy_is_argmax_after_the_repetition_penalty():
    logits = np.array([0.1, 3.0, 2.9, -1.0])
    assert Sampler(SamplingParams(), [])(logits) == 1
    assert Sampler(SamplingParams(repetition_penalty=1.5), [1])(logits) == 2  # 3.0 / 1.5 < 2.9
    assert Sampler(SamplingParams(temperature=0.5, top_k=1, seed=4), [])(logits) == 1


def test_seed_reproduces_and_different_seeds_differ():
    logits = np.random.default_rng(1).normal(0, 1, 500)

    def draw(seed):
        sampler = Sampler(SamplingParams(temperature=1.0, seed=seed), [])
        return [sampler(logits) for _ in range(30)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


@pytest.mark.parametrize("bad", [
    dict(max_new_tokens=-1), dict(temperature=-0.1), dict(temperature=float("nan")), dict(top_k=-2),
    dict(top_p=0.0), dict(top_p=1.5), dict(repetition_penalty=0.0), dict(seed=-3), dict(stop=("",)),
    dict(stop_token_ids=(-1,)), dict(presence_penalty=2.5), dict(frequency_penalty=-3), dict(min_p=1.5),
    dict(min_p=-0.1), dict(logprobs=21),
])
def test_invalid_settings_are_user_errors(bad):
    field = next(iter(bad))
    with pytest.raises(MixtralTrtError, match=f"^{field}="):
        SamplingParams(**bad)


def _openai_penalized(logits: np.ndarray, reply: list[int], presence: float, frequency: float) -> np.ndarray:
    """OpenAI's documented rule, token by token: mu[j] - c[j] * frequency - (c[j] > 0) * presence."""
    out = logits.astype(np.float64).copy()
    for j in range(len(out)):
        c = reply.count(j)
        out[j] -= c * frequency + (1.0 if c > 0 else 0.0) * presence
    return out


@pytest.mark.parametrize("presence, frequency", [(0.5, 0.0), (0.0, 0.8), (1.2, -0.4), (-2.0, 2.0)])
def test_presence_and_frequency_penalties_follow_openai(presence, frequency):
    """Over the reply's tokens only: the prompt's tokens are not penalized (the Sampler's greedy pick shows it)."""
    rng = np.random.default_rng(4)
    params = SamplingParams(presence_penalty=presence, frequency_penalty=frequency, temperature=1.0)
    for _ in range(5):
        logits = rng.normal(0, 2, 50)
        reply = rng.integers(0, 50, 12).tolist()
        got = processed_logits(logits, [], params, reply=reply)
        np.testing.assert_allclose(got, _openai_penalized(logits, reply, presence, frequency), rtol=1e-12)
    logits = np.zeros(8)
    logits[3] = 1.0
    sampler = Sampler(SamplingParams(presence_penalty=2.0), prompt=[3, 3, 3])
    assert sampler(logits) == 3  # the prompt's 3s are not counted
    assert sampler(logits) == 0  # the reply's one 3: 1 - 2 < 0


@pytest.mark.parametrize("min_p, temperature", [(0.05, 1.0), (0.3, 0.7), (0.9, 1.5), (1.0, 1.0)])
def test_min_p_equals_hf_transformers(min_p, temperature):
    from transformers import LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper

    rng = np.random.default_rng(5)
    params = SamplingParams(temperature=temperature, min_p=min_p)
    chain = LogitsProcessorList([TemperatureLogitsWarper(temperature), MinPLogitsWarper(min_p)])
    for trial in range(5):
        logits = rng.normal(0, 3, 300)
        ours = processed_logits(logits, [], params)
        hf = chain(torch.zeros((1, 0), dtype=torch.long), torch.tensor(logits, dtype=torch.float64)[None])[0].numpy()
        kept, hf_kept = np.isfinite(ours), np.isfinite(hf)
        assert (kept == hf_kept).all(), f"trial {trial}: kept {np.flatnonzero(kept)} vs HF {np.flatnonzero(hf_kept)}"
        np.testing.assert_allclose(ours[kept], hf[kept], rtol=1e-12)


def test_logit_bias_is_added_to_the_logits_before_everything_else():
    """Oracle: the Sampler without bias on logits to which the bias was added by hand (greedy and seeded)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=64).astype(np.float32)  # [V]
    bias = {3: 100.0, 5: -100, 7: 2.5}
    seeded = dict(temperature=0.8, top_p=0.9, top_k=20, seed=11, repetition_penalty=1.3)
    for settings in (dict(temperature=0.0), seeded):
        biased = logits.astype(np.float64)
        for t, b in bias.items():
            biased[t] += b
        expected = Sampler(SamplingParams(**settings), [1, 2])(biased)
        got = Sampler(SamplingParams(**settings, logit_bias=bias), [1, 2])(logits)
        assert got == expected, (settings, got, expected)
    assert Sampler(SamplingParams(temperature=0.0, logit_bias={3: 100}), [])(logits) == 3
    draws = {Sampler(SamplingParams(temperature=1.0, seed=s, logit_bias={3: -100}), [])(logits) for s in range(200)}
    assert 3 not in draws and len(draws) > 10


@pytest.mark.parametrize("bias, message", [
    ({3: 101}, "logit_bias=101: must be in [-100, 100]"),
    ({-1: 1}, "logit_bias=-1: must be an integer >= 0"),
    ({True: 1}, "logit_bias=True: must be an integer >= 0"),
    ({3: True}, "logit_bias=True: must be in [-100, 100]"),
    ("3:1", "logit_bias='3:1': must map token ids to biases"),
])
def test_bad_logit_bias_is_one_line(bias, message):
    with pytest.raises(MixtralTrtError, match=re.escape(message)):
        SamplingParams(logit_bias=bias)
