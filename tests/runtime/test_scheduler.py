"""Scheduler: requests that join a running batch and leave it get exactly the reply they get alone
(oracle: `Engine.generate` of each request by itself, greedy and seeded), cancelled rows leave, the
queue is bounded, bad requests fail at submit, an engine failure fails only the requests in flight,
and the background thread drains or cancels on shutdown."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import QueueFull, Scheduler, ShuttingDown

PROMPTS = ["Hello, my name is", "Hi", "The capital of France is a city where people", "日本語で話しましょう",
           "Once upon a time, in a land far away, there lived", "a b c d e f g", "Bonjour"]
SETTINGS = [
    dict(max_new_tokens=12, ignore_eos=True),
    dict(max_new_tokens=10, temperature=0.8, top_k=40, top_p=0.9, seed=5),
    dict(max_new_tokens=20, ignore_eos=True),
    dict(max_new_tokens=7, ignore_eos=True),
    dict(max_new_tokens=15, temperature=1.0, seed=7, repetition_penalty=1.1, ignore_eos=True),
    dict(max_new_tokens=9, temperature=0.7, seed=1, ignore_eos=True),
    dict(max_new_tokens=5),
]


@pytest.fixture(params=["plain", "ragged"])
def served(request, tiny_engine, tiny_ragged_engine):
    """The engine a test's Scheduler runs: tiny_engine (today's steps) or the same export built --ragged (mixed
    steps, runtime/mixed_step.py); the oracle stays tiny_engine's own generate."""
    return tiny_engine if request.param == "plain" else tiny_ragged_engine


def _submit(sched, eng, n, **kw):
    return sched.submit(eng.tokenizer.encode(PROMPTS[n]), SamplingParams(**SETTINGS[n]), tokenizer=eng.tokenizer, **kw)


def test_requests_joining_and_leaving_get_their_solo_replies(tiny_engine, served):
    eng = served
    solo = [tiny_engine.generate(p, **s) for p, s in zip(PROMPTS, SETTINGS, strict=True)]
    sched = Scheduler(eng, max_batch=3)  # 7 requests, 3 rows: some wait, and join as others leave
    events = {n: [] for n in range(len(PROMPTS))}
    requests = []
    for n, when in enumerate([0, 0, 3, 3, 4, 4, 9]):  # submitted before step `when`
        while sched.stats.steps < when:
            sched.step()
        requests.append(_submit(sched, eng, n, on_event=events[n].append))
    sched.run_until_idle()
    assert max(sched.stats.batch_sizes) == 3 and min(sched.stats.batch_sizes) < 3
    for n, (request, alone) in enumerate(zip(requests, solo, strict=True)):
        got = request.completion()
        assert request.status == "done" and request.done
        assert got.token_ids == alone.token_ids, f"request {n}: {got.token_ids} != alone {alone.token_ids}"
        assert (got.text, got.finish_reason) == (alone.text, alone.finish_reason), n
        assert [e.token_id for e in events[n]] == got.token_ids and "".join(e.text for e in events[n]) == got.text
    assert sched.running == sched.waiting == 0 and sched._cache is None  # every row left
    assert sched._batch is None if eng is tiny_engine else len(sched._batch) == 0


def test_the_cache_shrinks_when_the_longest_row_leaves(tiny_engine):
    eng = tiny_engine
    sched = Scheduler(eng)
    long_prompt = eng.tokenizer.encode(PROMPTS[4])
    short = sched.submit([1, 5, 6], SamplingParams(max_new_tokens=6, ignore_eos=True))
    long = sched.submit(long_prompt, SamplingParams(max_new_tokens=3, ignore_eos=True))
    sched.step()  # both prefilled (one token each), then one decode step (a second token each)
    assert sched._cache.length == len(long_prompt) + 1 and sched._cache.lengths.tolist() == [4, len(long_prompt) + 1]
    sched.step()  # `long` has its third token and leaves: the padding in front of `short` goes with it
    assert long.done and sched.running == 1 and sched._cache.length == 5 and sched._cache.mask is None
    sched.run_until_idle()
    assert short.completion().token_ids == eng.generate([1, 5, 6], max_new_tokens=6, ignore_eos=True).token_ids


def test_cancel_frees_the_row_and_spares_the_others(tiny_engine):
    eng = tiny_engine
    sched = Scheduler(eng)
    a = _submit(sched, eng, 0)
    b = _submit(sched, eng, 2)
    sched.step()
    a.cancel()
    sched.step()
    # two steps: a first token from each prefill and a second from each decode step; none after cancel
    assert a.status == "cancelled" and a.done and len(a.reply.token_ids) == 2 and sched.running == 1
    sched.run_until_idle()
    assert b.completion().token_ids == eng.generate(PROMPTS[2], **SETTINGS[2]).token_ids
    assert (sched.stats.cancelled, sched.stats.finished) == (1, 1)


def test_the_queue_is_bounded(tiny_engine):
    eng = tiny_engine
    sched = Scheduler(eng, max_queue=2)
    first, _ = _submit(sched, eng, 0), _submit(sched, eng, 1)
    with pytest.raises(QueueFull, match="2 requests are already waiting"):
        _submit(sched, eng, 2)
    first.cancel()  # a cancelled request no longer holds a place
    _submit(sched, eng, 2)
    sched.run_until_idle()
    assert first.status == "cancelled" and not first.reply.token_ids


def test_bad_requests_fail_at_submit(tiny_engine):
    eng = tiny_engine
    sched = Scheduler(eng)
    with pytest.raises(MixtralTrtError, match=r"prompt: 250 tokens \+ max_new_tokens 10 exceed the engine's context "
                                              r"of 256 tokens"):
        sched.submit([1] * 250, SamplingParams(max_new_tokens=10))
    with pytest.raises(MixtralTrtError, match="outside the vocabulary"):
        sched.submit([1, 32000], SamplingParams(max_new_tokens=1))
    with pytest.raises(MixtralTrtError, match="max_batch=5"):
        Scheduler(eng, max_batch=5)
    nothing = sched.submit([1, 2], SamplingParams(max_new_tokens=0))
    sched.run_until_idle()
    assert nothing.status == "done" and nothing.completion().token_ids == [] and sched.stats.steps == 0


def test_an_engine_failure_fails_the_requests_in_flight_only(tiny_engine, monkeypatch):
    eng = tiny_engine
    sched = Scheduler(eng)
    a, b = _submit(sched, eng, 0), _submit(sched, eng, 2)
    forward = eng.forward
    monkeypatch.setattr(eng, "forward", lambda ids, *args, **kw: (_ for _ in ()).throw(RuntimeError("device lost"))
                        if ids.shape[0] == 2 else forward(ids, *args, **kw))
    sched.step()  # both prefill alone (batch 1), then the batch-2 decode step fails
    assert a.status == b.status == "failed" and "RuntimeError: device lost" in a.error and sched.running == 0
    monkeypatch.setattr(eng, "forward", forward)
    c = _submit(sched, eng, 3)
    sched.run_until_idle()
    assert c.status == "done" and c.completion().token_ids == eng.generate(PROMPTS[3], **SETTINGS[3]).token_ids


def test_background_thread_serves_many_submitters_and_shuts_down(tiny_engine, served):
    eng = served
    sched = Scheduler(eng).start()
    requests = [None] * len(PROMPTS)

    def client(n):
        requests[n] = _submit(sched, eng, n)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, request in enumerate(requests):
        assert request.wait(60), f"request {n} did not finish"
        assert request.completion().token_ids == tiny_engine.generate(PROMPTS[n], **SETTINGS[n]).token_ids, n
    long = sched.submit([1, 2, 3], SamplingParams(max_new_tokens=250, ignore_eos=True))
    sched.shutdown(timeout=0)  # no grace: what is in flight is cancelled
    assert long.status == "cancelled" and len(long.reply.token_ids) < 250
    with pytest.raises(ShuttingDown):
        sched.submit([1, 2], SamplingParams())
    assert np.isfinite(sched.stats.tokens_per_second())


class _Script:
    """A stand-in grammar constraint: allows any token, ends the reply after `end_after` tokens, or fails on
    token number `fail_at` (as an llguidance matcher in error does)."""

    def __init__(self, end_after: int | None = None, fail_at: int | None = None) -> None:
        self.end_after, self.fail_at, self.seen, self.terminated = end_after, fail_at, 0, False

    def allowed(self):
        return None

    def advance(self, token: int) -> None:
        self.seen += 1
        if self.seen == self.fail_at:
            raise MixtralTrtError(f"constrained decoding: token {token} rejected")
        self.terminated = self.seen == self.end_after


def test_a_constraint_ends_or_fails_only_its_own_row(tiny_engine, served):
    eng = served
    sched = Scheduler(eng)
    free = _submit(sched, eng, 2)
    ended = sched.submit([1, 5, 6, 7], SamplingParams(max_new_tokens=20, ignore_eos=True), constraint=_Script(4))
    broken = sched.submit([1, 8, 9], SamplingParams(max_new_tokens=20), constraint=_Script(fail_at=3))
    sched.run_until_idle()
    assert ended.status == "done" and len(ended.reply.token_ids) == 4 and ended.completion().finish_reason == "stop"
    assert broken.status == "failed" and re.fullmatch(r"constrained decoding: token \d+ rejected", broken.error)
    assert len(broken.reply.token_ids) == 2  # the rejected third token never reached the reply
    assert free.status == "done" and \
        free.completion().token_ids == tiny_engine.generate(PROMPTS[2], **SETTINGS[2]).token_ids


def test_n_samples_share_one_prefill(tiny_engine, served):
    """submit_n: one prefill for n rows; sample i equals the request alone with seed + i (greedy: all equal
    the greedy reply); events carry the sample's index; n above the max batch is refused in one line."""
    eng, oracle = served, tiny_engine
    prompt = eng.tokenizer.encode(PROMPTS[4])
    sched = Scheduler(eng, max_batch=4, prefill_chunk=8)
    other = _submit(sched, eng, 2)
    events = []
    sampled = sched.submit_n(prompt, SamplingParams(max_new_tokens=9, temperature=1.0, seed=11, ignore_eos=True), 3,
                             on_event=events.append)
    sched.run_until_idle()
    assert sched.stats.prefills == 2 and max(sched.stats.batch_sizes) == 4
    for i, request in enumerate(sampled):
        alone = oracle.generate(prompt, max_new_tokens=9, temperature=1.0, seed=11 + i, ignore_eos=True).token_ids
        assert request.completion().token_ids == alone, f"sample {i}"
        assert [e.token_id for e in events if e.index == i] == alone
    assert len({tuple(r.completion().token_ids) for r in sampled}) == 3
    assert other.completion().token_ids == oracle.generate(PROMPTS[2], **SETTINGS[2]).token_ids
    greedy = sched.submit_n(prompt, SamplingParams(max_new_tokens=5, ignore_eos=True), 2)
    sched.run_until_idle()
    assert greedy[0].completion().token_ids == greedy[1].completion().token_ids == \
        oracle.generate(prompt, max_new_tokens=5, ignore_eos=True).token_ids
    with pytest.raises(MixtralTrtError, match=r"^n=5: must be an integer >= 1 and <= 4 \(each sample needs a row; "
                                              r"the scheduler's max batch is 4\)$"):
        sched.submit_n(prompt, SamplingParams(), 5)


def test_auto_prefill_chunk_fits_its_share_of_a_decode_step(tiny_engine):
    """prefill_chunk="auto": the most tokens while no row decodes; the floor until both step times
    are measured; then as many prompt tokens as cost AUTO_TARGET of a decode step at the measured time per
    prompt token, within [AUTO_MIN, AUTO_MAX]; and the replies stay the solo ones (greedy)."""
    from mixtral_trt.runtime import scheduler as sch

    sched = Scheduler(tiny_engine, prefill_chunk=sch.AUTO)
    assert sched.prefill_chunk == sch.AUTO and sched.chunk_budget() == sch.AUTO_MAX  # nobody decodes yet
    first = _submit(sched, tiny_engine, 2)
    sched.step()
    assert sched.running == 1 and sched._decode_s > 0 and sched._prefill_token_s > 0
    sched._decode_s, sched._prefill_token_s = 0.1, 0.001  # a decode step 100 ms, a prompt token 1 ms
    assert sched.chunk_budget() == int(sch.AUTO_TARGET * 100)
    sched._prefill_token_s = 0.1
    assert sched.chunk_budget() == sch.AUTO_MIN
    sched._prefill_token_s = 1e-6
    assert sched.chunk_budget() == sch.AUTO_MAX
    second = _submit(sched, tiny_engine, 4)
    sched.run_until_idle()
    assert first.completion().token_ids == tiny_engine.generate(PROMPTS[2], **SETTINGS[2]).token_ids
    assert second.completion().token_ids == tiny_engine.generate(PROMPTS[4], **SETTINGS[4]).token_ids
    with pytest.raises(MixtralTrtError, match=r"^prefill_chunk='fast': must be an integer >= 1"):
        Scheduler(tiny_engine, prefill_chunk="fast")
