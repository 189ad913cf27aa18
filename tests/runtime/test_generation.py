"""Engine.generate / stream: greedy equals the reference and HF transformers, batches equal their prompts
run alone, seeds reproduce, streams equal the finished completions, stop strings / tokens, chunked calls,
and the KV cache staying inside ONNX Runtime between steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.mixtral_ref.generate import generate as reference_generate
from mixtral_trt.runtime.reply import Reply

PROMPTS = ["Hello, my name is", "Hi", "The capital of France is a city where people", "日本語で話しましょう",
           "Once upon a time, in a land far away, there lived"]
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=11)


def test_greedy_equals_the_reference(tiny_engine, tiny_reference):
    for prompt in PROMPTS[:3]:
        ids = tiny_engine.tokenizer.encode(prompt)
        got = tiny_engine.generate(ids, max_new_tokens=16, ignore_eos=True)
        assert got.token_ids == reference_generate(tiny_reference, ids, 16), prompt
        assert got.finish_reason == "length" and got.prompt_tokens == len(ids)
        assert got.text == tiny_engine.tokenizer.decode(got.token_ids)
    assert tiny_engine.generate(PROMPTS[0], max_new_tokens=5).token_ids == \
        tiny_engine.generate(tiny_engine.tokenizer.encode(PROMPTS[0]), max_new_tokens=5).token_ids  # text: BOS + text


def test_greedy_equals_hf_generate_on_an_unseen_checkpoint(hf_checkpoint, tmp_path):
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.export import export_checkpoint

    ckpt = hf_checkpoint(seed=12, num_local_experts=5, num_experts_per_tok=2, num_hidden_layers=3, sliding_window=7)
    onnx_dir = export_checkpoint(ckpt.path, tmp_path / "onnx", max_seq=64, max_batch=2)
    eng = runtime.load(build_engine(onnx_dir, tmp_path / "engine", "ort"))
    prompts = [[1, 17, 42, 99, 5, 63], [1, 120, 7]]

    def hf(prompt, eos=None):
        with torch.no_grad():
            out = ckpt.model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=eos,
                                      pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.int64))
        return out[0, len(prompt):].tolist()

    got = eng.generate(prompts, max_new_tokens=20, ignore_eos=True)
    for prompt, completion in zip(prompts, got, strict=True):
        expected = hf(prompt)
        assert completion.token_ids == expected, f"prompt {prompt}"
        assert len(set(expected)) > 3, f"degenerate continuation {expected}: the test would not see a wrong cache"
        stop = expected[8]  # HF's eos_token_id and our stop token end the reply at the same place
        cut = eng.generate(prompt, max_new_tokens=20, stop_token_ids=[stop], ignore_eos=True)
        assert cut.token_ids == hf(prompt, eos=stop) == expected[: expected.index(stop) + 1]
        assert (cut.finish_reason, cut.stop_reason) == ("stop", stop)


@pytest.mark.parametrize("settings", [dict(), SAMPLED], ids=["greedy", "sampled"])
def test_a_batch_equals_its_prompts_alone(tiny_engine, settings):
    assert tiny_engine.max_batch == 4  # five prompts: two successive batches
    batch = tiny_engine.generate(PROMPTS, max_new_tokens=12, **settings)
    alone = [tiny_engine.generate(p, max_new_tokens=12, **settings) for p in PROMPTS]
    assert [c.token_ids for c in batch] == [c.token_ids for c in alone]
    assert [c.text for c in batch] == [c.text for c in alone]
    assert len({tuple(c.token_ids) for c in batch}) == len(PROMPTS)


def test_seed_reproduces_sampling_and_changes_it(tiny_engine):
    first = tiny_engine.generate(PROMPTS[0], max_new_tokens=16, **SAMPLED)
    assert tiny_engine.generate(PROMPTS[0], max_new_tokens=16, **SAMPLED) == first
    other = tiny_engine.generate(PROMPTS[0], max_new_tokens=16, **{**SAMPLED, "seed": 12})
    greedy = tiny_engine.generate(PROMPTS[0], max_new_tokens=16)
    assert other.token_ids != first.token_ids and greedy.token_ids != first.token_ids


@pytest.mark.parametrize("settings", [dict(), SAMPLED], ids=["greedy", "sampled"])
def test_streaming_equals_the_completions(tiny_engine, settings):
    done = tiny_engine.generate(PROMPTS[:3], max_new_tokens=10, **settings)
    events = list(tiny_engine.stream(PROMPTS[:3], max_new_tokens=10, **settings))
    for n, completion in enumerate(done):
        mine = [e for e in events if e.index == n]
        assert [e.token_id for e in mine] == completion.token_ids
        assert "".join(e.text for e in mine) == completion.text
        assert [e.finish_reason for e in mine] == [None] * (len(mine) - 1) + [completion.finish_reason]


def test_stop_strings_cut_the_text_and_are_never_streamed(tiny_engine):
    full = tiny_engine.generate(PROMPTS[2], max_new_tokens=24, ignore_eos=True)
    text = full.text
    at = next(i for i in range(len(text) // 2, len(text) - 3) if text.find(text[i : i + 3]) == i and text[i] != " ")
    stop = text[at : at + 3]
    got = tiny_engine.generate(PROMPTS[2], max_new_tokens=24, stop=[stop, "never-there"], ignore_eos=True)
    assert got.text == text[:at], (stop, text)
    assert (got.finish_reason, got.stop_reason) == ("stop", stop)
    assert got.token_ids == full.token_ids[: len(got.token_ids)] and len(got.token_ids) < 24
    streamed = [e.text for e in tiny_engine.stream(PROMPTS[2], max_new_tokens=24, stop=[stop], ignore_eos=True)]
    assert "".join(streamed) == text[:at]


def test_reply_ends_on_eos_and_holds_back_partial_stop_strings(tiny_engine):
    tok = tiny_engine.tokenizer
    ids = tok.encode(" alpha beta gamma", bos=False)
    reply = Reply(0, 3, runtime.SamplingParams(max_new_tokens=50, stop=("beta gam",)), tok.eos_id, tok)
    texts = [reply.push(i).text for i in ids]
    assert "".join(texts) == " alpha " and reply.finish_reason == "stop"
    reply = Reply(0, 3, runtime.SamplingParams(max_new_tokens=50), tok.eos_id, tok)
    events = [reply.push(i) for i in [*ids[:2], tok.eos_id]]
    assert events[-1].finish_reason == "stop" and reply.completion().stop_reason == tok.eos_id
    assert reply.completion().token_ids == [*ids[:2], tok.eos_id] and reply.completion().text == tok.decode(ids[:2])
    ignoring = Reply(0, 3, runtime.SamplingParams(max_new_tokens=50, ignore_eos=True), tok.eos_id, tok)
    assert ignoring.push(tok.eos_id).finish_reason is None


def test_zero_new_tokens(tiny_engine):
    got = tiny_engine.generate([PROMPTS[0]], max_new_tokens=0)
    assert [(c.token_ids, c.text, c.finish_reason) for c in got] == [([], "", "length")]


def test_calls_longer_than_the_backend_takes_run_in_chunks(tiny_engine_dir, monkeypatch):
    eng = runtime.load(tiny_engine_dir)
    ids = np.random.default_rng(0).integers(3, eng.config.vocab_size, (2, 13))
    whole, cache = eng.forward(ids)
    greedy = eng.generate(ids.tolist(), max_new_tokens=6, ignore_eos=True)
    monkeypatch.setitem(eng.manifest.backend_info, "max_tokens_per_call", 4)  # as a TensorRT prefill profile would
    assert eng.max_tokens_per_call == 4
    calls = []
    run = eng.runner.run
    monkeypatch.setattr(eng.runner, "run",
                        lambda feeds, names: calls.append(feeds["input_ids"].shape) or run(feeds, names))
    chunked, chunked_cache = eng.forward(ids)
    assert calls == [(2, 4), (2, 4), (2, 4), (2, 1)]
    np.testing.assert_allclose(chunked["logits"], whole["logits"], rtol=0, atol=1e-4 * np.abs(whole["logits"]).max())
    assert chunked_cache.length == cache.length == 13
    assert [c.token_ids for c in eng.generate(ids.tolist(), max_new_tokens=6, ignore_eos=True)] == \
        [c.token_ids for c in greedy]


def test_the_kv_cache_stays_in_onnx_runtime(tiny_engine):
    import onnxruntime as ort

    ids = np.array([[1, 50, 60, 70]])
    out, cache = tiny_engine.forward(ids)
    assert all(isinstance(a, ort.OrtValue) for a in cache.keys + cache.values)
    step, cache = tiny_engine.forward(np.array([[int(out["logits"][0, -1].argmax())]]), cache)
    whole = tiny_engine.logits(np.array([[1, 50, 60, 70, int(out["logits"][0, -1].argmax())]]))
    np.testing.assert_allclose(step["logits"][0, -1], whole[0, -1], rtol=0, atol=1e-4 * np.abs(whole).max())
    assert cache.length == 5
