"""logprobs / prompt_logprobs (runtime/logprobs.py) against the reference: every reported logprob equals
(1e-4) torch's log_softmax of mixtral_ref's logits at the same position, for the sampled token and the top
ones, whatever the sampling settings (temperature, top-k, repetition penalty shape the draw, not the
reported distribution); through Engine.generate / stream and through the Scheduler with chunked prefill
and the prefix cache."""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import Scheduler
from support.logprobs import reference_logprobs

TOL = 1e-4  # fp32 engine vs fp32 reference, in nats
SAMPLED = dict(max_new_tokens=8, temperature=0.9, top_k=50, repetition_penalty=1.3, seed=3, ignore_eos=True)


def _check(entry, ref_row: np.ndarray, token: int, k: int, where: str) -> None:
    assert entry.token_id == token, where
    err = abs(entry.logprob - ref_row[token])
    assert err < TOL, f"{where}: logprob {entry.logprob:.6f} vs reference {ref_row[token]:.6f} ({err:.1e})"
    want = np.argsort(-ref_row, kind="stable")[:k]
    assert [t for t, _ in entry.top] == want.tolist(), f"{where}: top ids {entry.top} vs {want.tolist()}"
    errs = [abs(lp - ref_row[t]) for t, lp in entry.top]
    assert max(errs, default=0) < TOL, f"{where}: top logprobs off by {max(errs):.1e}"


def _check_completion(done, prompt: list[int], ref: np.ndarray, k: int, k_prompt: int | None) -> None:
    assert len(done.logprobs) == len(done.token_ids)
    for j, (entry, token) in enumerate(zip(done.logprobs, done.token_ids, strict=True)):
        _check(entry, ref[len(prompt) - 1 + j], token, k, f"new token {j}")
    if k_prompt is None:
        assert done.prompt_logprobs is None
        return
    assert len(done.prompt_logprobs) == len(prompt) and done.prompt_logprobs[0] is None
    for t in range(1, len(prompt)):
        _check(done.prompt_logprobs[t], ref[t - 1], prompt[t], k_prompt, f"prompt token {t}")


def test_generate_reports_the_reference_logprobs(tiny_engine, tiny_reference):
    prompts = [tiny_engine.tokenizer.encode(p) for p in ("The capital of France is", "Once upon a time, there")]
    done = tiny_engine.generate(prompts, logprobs=5, prompt_logprobs=3, **SAMPLED)
    for prompt, d in zip(prompts, done, strict=True):
        ref = reference_logprobs(tiny_reference, prompt + d.token_ids[:-1])
        _check_completion(d, prompt, ref, 5, 3)
        # the draw was tempered and penalized; the reported logprobs are the model's own
        assert any(abs(e.logprob - e.top[0][1]) > 1e-3 for e in d.logprobs)
    events = list(tiny_engine.stream(prompts[0], logprobs=5, **SAMPLED))
    alone = [e.logprob for e in events]  # prompt 0 alone: the same tokens, logprobs within float rounding
    assert [e.token_id for e in alone] == [e.token_id for e in done[0].logprobs]
    np.testing.assert_allclose([e.logprob for e in alone], [e.logprob for e in done[0].logprobs], atol=1e-5)
    plain = tiny_engine.generate(prompts[0], **SAMPLED)
    assert plain.token_ids == done[0].token_ids and plain.logprobs is None and plain.prompt_logprobs is None
    greedy = tiny_engine.generate(prompts[1], max_new_tokens=4, logprobs=0)
    assert all(e.top == () and e.token_id == t for e, t in zip(greedy.logprobs, greedy.token_ids, strict=True))


def test_scheduler_reports_them_through_chunks_and_the_prefix_cache(tiny_engine, tiny_reference):
    tok = tiny_engine.tokenizer
    base = tok.encode("In the beginning the universe was created. This has made a lot of people very angry")
    prompts = [base + tok.encode(" and been widely regarded")[1:], base + tok.encode(" as a bad move.")[1:]]
    sched = Scheduler(tiny_engine, prefix_cache_gb=0.01, prefill_chunk=7)
    first = sched.submit(prompts[0], SamplingParams(logprobs=2, prompt_logprobs=4, **SAMPLED))
    sched.run_until_idle()
    second = sched.submit(prompts[1], SamplingParams(logprobs=20, **SAMPLED))
    echo = sched.submit(prompts[1], SamplingParams(logprobs=1, prompt_logprobs=0, **SAMPLED))
    sched.run_until_idle()
    assert sched.stats.cached_prompt_tokens > 0  # `second` started from `first`'s blocks; `echo` computed all
    assert echo.prefill is None and sched.stats.prefill_chunks > 3
    for request, prompt, k, kp in ((first, prompts[0], 2, 4), (second, prompts[1], 20, None),
                                   (echo, prompts[1], 1, 0)):
        done = request.completion()
        _check_completion(done, prompt, reference_logprobs(tiny_reference, prompt + done.token_ids[:-1]), k, kp)


def test_logit_bias_is_in_the_reported_distribution(tiny_engine, tiny_reference):
    """OpenAI's logit_bias changes the logits before sampling, so the new tokens' logprobs are the biased
    distribution's (the prompt's stay the model's own)."""
    prompt = tiny_engine.tokenizer.encode("Bias the next word")
    bias = {29871: 4.0, 450: -3.0, 1576: 6.5}
    done = tiny_engine.generate(prompt, logprobs=4, prompt_logprobs=2, logit_bias=bias, **SAMPLED)
    ids = prompt + done.token_ids[:-1]
    biased, plain = reference_logprobs(tiny_reference, ids, bias), reference_logprobs(tiny_reference, ids)
    for j, (entry, token) in enumerate(zip(done.logprobs, done.token_ids, strict=True)):
        _check(entry, biased[len(prompt) - 1 + j], token, 4, f"new token {j}")
    assert any(entry.top[0][0] == 1576 for entry in done.logprobs)
    for t in range(1, len(prompt)):
        _check(done.prompt_logprobs[t], plain[t - 1], prompt[t], 2, f"prompt token {t}")


@pytest.mark.parametrize("field, value, message", [
    ("logprobs", 21, "logprobs=21: must be an integer >= 0 and <= 20"),
    ("logprobs", True, "logprobs=True: must be an integer >= 0 and <= 20"),
    ("prompt_logprobs", -1, "prompt_logprobs=-1: must be an integer >= 0 and <= 20"),
])
def test_bad_logprobs_are_one_line_errors(tiny_engine, field, value, message):
    with pytest.raises(MixtralTrtError, match=f"^{message}$"):
        tiny_engine.generate([1, 2, 3], **{field: value})


def test_chat_completions_carry_them(tiny_engine, tiny_reference):
    """Engine.chat_completion: one logprob per reply token (the reference's); the stream's chunks carry the
    same entries, each token's in the chunk that gives (or follows) its text."""
    from mixtral_trt.runtime.chat_completion import prepare_chat

    messages = [{"role": "user", "content": "Name three rivers."}]
    reply = tiny_engine.chat_completion(messages, logprobs=3, max_new_tokens=10, ignore_eos=True)
    prompt = prepare_chat(tiny_engine.tokenizer, messages, None, None, None).prompt
    ref = reference_logprobs(tiny_reference, prompt + reply.token_ids[:-1])
    for j, (entry, token) in enumerate(zip(reply.logprobs, reply.token_ids, strict=True)):
        _check(entry, ref[len(prompt) - 1 + j], token, 3, f"reply token {j}")
    chunks = list(tiny_engine.chat_completion_stream(messages, logprobs=3, max_new_tokens=10, ignore_eos=True))
    streamed = [e for c in chunks for e in c.logprobs]
    assert [e.token_id for e in streamed] == reply.token_ids
    np.testing.assert_allclose([e.logprob for e in streamed], [e.logprob for e in reply.logprobs], atol=1e-5)
    assert tiny_engine.chat_completion(messages, max_new_tokens=2).logprobs is None


def test_max_new_tokens_0_gives_only_the_prompts_logprobs(tiny_engine, tiny_reference):
    """The scoring request of evaluation harnesses (echo, max_tokens 0): the prompt computed, nothing sampled,
    through generate and the Scheduler."""
    prompt = tiny_engine.tokenizer.encode("Two plus two equals four")
    ref = reference_logprobs(tiny_reference, prompt)
    done = tiny_engine.generate(prompt, max_new_tokens=0, prompt_logprobs=2, logprobs=0)
    sched = Scheduler(tiny_engine, prefill_chunk=3)
    queued = sched.submit(prompt, SamplingParams(max_new_tokens=0, prompt_logprobs=2, logprobs=0))
    sched.run_until_idle()
    for got in (done, queued.completion()):
        assert got.token_ids == [] and got.finish_reason == "length"
        _check_completion(got, prompt, ref, 0, 2)
    assert queued.status == "done" and sched.stats.prefill_chunks > 1 and sched.stats.generated_tokens == 0
