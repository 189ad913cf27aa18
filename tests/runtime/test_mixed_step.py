"""Mixed steps (runtime/mixed_step.py): the Scheduler on a `build --ragged` engine runs ONE call per step carrying
the running rows' tokens and the entering prompts' chunks over a packed cache. Judged against the same export's
engine without --ragged served by today's Scheduler (a left-padded batch, prompts on their own caches), and against
mixtral_ref for prompt logprobs: the same greedy tokens and seeded samples, logprobs within 1e-4 (fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.lowering.ragged_attention import OP, attention_form
from mixtral_trt.runtime.mixed_step import MixedBatch
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import Scheduler
from support.models import SLIDING_TOP3, export_dir, random_model

LOGPROB_TOL = 1e-4  # fp32: the same float32 logits, summed in another order (packed vs padded attention)


def _engines(tmp_path_factory, window: int | None, kv_cache: str = "float"):
    reference = random_model(SLIDING_TOP3.replace(sliding_window=window), seed=5)
    onnx_dir = export_dir(tmp_path_factory, reference, "fp32", f"mixed-{window}-{kv_cache}")
    root = tmp_path_factory.mktemp("mixed-engines")
    plain = runtime.load(build_engine(onnx_dir, root / "plain", "ort", kv_cache=kv_cache))
    ragged = runtime.load(build_engine(onnx_dir, root / "ragged", "ort", kv_cache=kv_cache, ragged=True))
    return reference, plain, ragged


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(reference, engine, the same export built --ragged): full attention, float cache."""
    return _engines(tmp_path_factory, None)


def _prompts(n: int, lengths=(5, 23, 9, 14, 31, 7), seed: int = 2) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, SLIDING_TOP3.vocab_size, lengths[i % len(lengths)]).tolist() for i in range(n)]


def _serve(engine, jobs, steps_between: int = 2, **options):
    """Each job (prompt, SamplingParams) submitted `steps_between` steps after the previous one; the requests."""
    sched = Scheduler(engine, **options)
    requests = []
    for prompt, params in jobs:
        requests.append(sched.submit(prompt, params))
        for _ in range(steps_between):
            sched.step()
    sched.run_until_idle()
    return sched, requests


def _same(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.status == w.status == "done", (g.status, g.error, w.status, w.error)
        assert g.completion().token_ids == w.completion().token_ids, (g.completion().token_ids,
                                                                      w.completion().token_ids)
        if w.completion().logprobs:
            a = np.array([lp.logprob for lp in g.completion().logprobs])
            b = np.array([lp.logprob for lp in w.completion().logprobs])
            assert np.abs(a - b).max() <= LOGPROB_TOL, np.abs(a - b).max()


@pytest.mark.parametrize("chunk", [1, 4, 16, None, "auto"])
def test_greedy_replies_equal_todays_path(engines, chunk):
    """Requests joining at different times while others decode, prompts in chunks of 1, 4, 16, whole or "auto"
    (from the mixed steps' measured times): the same greedy tokens (and logprobs) as today's Scheduler on the
    engine without --ragged. With our CPU kernels built the --ragged engine's attention is their RaggedAttention."""
    _, plain, ragged = engines
    ours = "cpu_kernels" in ragged.manifest.backend_info
    assert ragged.manifest.backend_info["ragged_attention"] == attention_form("float", ours)
    assert (OP in ragged.manifest.backend_info["cpu_kernels"]["ops"]) if ours else True
    jobs = [(p, SamplingParams(max_new_tokens=4 + 3 * i, ignore_eos=True, logprobs=2))
            for i, p in enumerate(_prompts(5))]
    sched, got = _serve(ragged, jobs, prefill_chunk=chunk, prefix_cache_gb=0)
    assert sched._batch is not None and len(sched._batch) == 0
    _, want = _serve(plain, jobs, prefill_chunk=chunk, prefix_cache_gb=0)
    _same(got, want)
    assert sched.stats.prompt_tokens == sum(len(p) for p, _ in jobs) and sched.stats.prefills == len(jobs)
    assert sched.stats.generated_tokens == sum(q.max_new_tokens for _, q in jobs)
    if chunk == "auto":  # a decode-only step's time, and the mixed steps' time in decode steps that steers the chunk
        assert sched._decode_s > 0 and sched._mixed_ratio > 0


def test_auto_chunk_on_mixed_steps_is_steered_by_their_time(engines, monkeypatch):
    """"auto" on a ragged engine: the chunk starts at AUTO_MIXED_START, grows a token after each mixed step while
    the running mean of their times is within 1 + AUTO_MIXED_TARGET of the rows' decode step and loses a quarter
    while it is beyond (never under 1), with the step times faked; greedy replies stay today's."""
    from mixtral_trt.runtime import scheduler as sch

    _, plain, ragged = engines
    sched = Scheduler(ragged, prefill_chunk=sch.AUTO, prefix_cache_gb=0)
    assert sched.chunk_budget() == sch.AUTO_MAX  # nobody decodes
    first = sched.submit(_prompts(1)[0], SamplingParams(max_new_tokens=40, ignore_eos=True))
    sched.step()
    assert sched.running == 1 and sched.chunk_budget() == sch.AUTO_MIXED_START
    sched.step()  # a decode-only step: the rows' step time
    assert sched._decode_s > 0
    ratios = [1.2, 1.4, 3.0, 1.0, 2.0, 2.0, 2.0, 1.1]  # mixed steps' times in decode steps, then the real ones
    budgets, real = [], sched._steer
    monkeypatch.setattr(sched, "_steer", lambda ratio: real(ratios.pop(0) if ratios else ratio))
    second = sched.submit(list(range(3, 63)), SamplingParams(max_new_tokens=3, ignore_eos=True))  # 60 tokens
    for _ in range(8):
        sched.step()
        budgets.append(sched.chunk_budget())
    assert budgets == [5, 6, 4, 3, 2, 1, 1, 1], budgets  # means 1.2 1.25 1.69 1.52 1.64 1.73 1.80 1.62
    sched.run_until_idle()
    solo = Scheduler(plain, prefill_chunk=16, prefix_cache_gb=0)
    want = [solo.submit(p, SamplingParams(max_new_tokens=n, ignore_eos=True))
            for p, n in ((_prompts(1)[0], 40), (list(range(3, 63)), 3))]
    solo.run_until_idle()
    assert [first.completion().token_ids, second.completion().token_ids] == [w.completion().token_ids for w in want]


def test_one_engine_call_per_step(engines, monkeypatch):
    """While a prompt enters beside decoding rows each step is a single engine call carrying both."""
    _, _, ragged = engines
    sched = Scheduler(ragged, prefill_chunk=4, prefix_cache_gb=0)
    first = sched.submit(_prompts(1)[0], SamplingParams(max_new_tokens=30, ignore_eos=True))
    sched.step()  # its 5 prompt tokens: 4, then 1 + its first token
    sched.step()
    assert sched.running == 1
    calls = []
    run = ragged.runner.run
    monkeypatch.setattr(ragged.runner, "run", lambda feeds, names, *a: calls.append(feeds["input_ids"].shape)
                        or run(feeds, names, *a))
    sched.submit(_prompts(2)[1], SamplingParams(max_new_tokens=2, ignore_eos=True))  # 23 tokens: 6 chunks
    for _ in range(6):
        sched.step()
    assert calls == [(1, 5)] * 5 + [(1, 4)], calls  # 1 decode token + 4 prompt tokens, the last chunk 3
    assert sched.running == 2 and first.status == "running"
    sched.run_until_idle()


def test_rows_leaving_compact_the_cache(engines):
    """A long row leaves early (its slots dead, then compacted away: more than half the cache) while short rows
    decode on; then more rows join; every reply still equals today's path."""
    _, plain, ragged = engines
    prompts = _prompts(4, lengths=(60, 4, 6, 5))
    jobs = [(prompts[0], SamplingParams(max_new_tokens=2, ignore_eos=True)),
            *[(p, SamplingParams(max_new_tokens=25, ignore_eos=True)) for p in prompts[1:]]]
    sched, got = _serve(ragged, jobs, steps_between=1, prefill_chunk=16, prefix_cache_gb=0)
    _, want = _serve(plain, jobs, steps_between=1, prefill_chunk=16, prefix_cache_gb=0)
    _same(got, want)
    assert sched.stats.compactions >= 1


def test_compaction_keeps_live_rows_and_drops_dead_slots(engines):
    """MixedBatch directly: a leave marks slots dead without copying; past half the cache they are gathered out."""
    _, _, ragged = engines
    batch = MixedBatch(ragged)
    a, b, c = "a", "b", "c"
    for h in (a, b, c):
        batch.join(h)
    logits, _ = batch.step({a: [5, 6, 7], b: list(range(3, 33)), c: [9]})
    keys_before = batch.kv(c)[0][0].copy()
    batch.leave([a])
    assert batch.cache.dead == 3 and batch.compactions == 0 and batch.cache.length == 34
    batch.leave([b])
    assert batch.compactions == 1 and batch.cache.dead == 0 and batch.cache.length == 1 and batch.cache.rows == 1
    assert np.array_equal(batch.kv(c)[0][0], keys_before) and batch.length(c) == 1
    logits2, _ = batch.step({c: [10]})
    alone = MixedBatch(ragged)
    alone.join(c)
    want, _ = alone.step({c: [9]})
    want2, _ = alone.step({c: [10]})
    assert np.abs(logits[c] - want[c]).max() <= 1e-5 and np.abs(logits2[c] - want2[c]).max() <= 1e-5


def test_prefix_cache_multi_turn(engines):
    """Two turns of three chats: the second turn's prompts start with the first turn's prompt and reply, whose
    blocks the prefix cache holds (stored at prompt completion and on leave, gathered from the packed cache) and
    which enter the packed cache as the row's past; replies equal today's path without a prefix cache."""
    _, plain, ragged = engines
    firsts = _prompts(3, lengths=(20, 33, 17))
    params = SamplingParams(max_new_tokens=6, ignore_eos=True, logprobs=1)
    sched = Scheduler(ragged, prefill_chunk=8, prefix_cache_gb=0.01)
    ref = Scheduler(plain, prefill_chunk=8, prefix_cache_gb=0)
    turns = [[(p, params) for p in firsts]]
    for turn in range(2):
        got = [sched.submit(p, q) for p, q in turns[turn]]
        want = [ref.submit(p, q) for p, q in turns[turn]]
        sched.run_until_idle()
        ref.run_until_idle()
        _same(got, want)
        turns.append([(p + r.completion().token_ids + [7, 8, 9], params) for (p, _), r in zip(turns[turn], got,
                                                                                                 strict=True)])
    assert sched.stats.cached_prompt_tokens >= 3 * 16, sched.stats.cached_prompt_tokens


def test_n_samples_and_seeded_sampling(engines):
    """submit_n on a ragged engine: the prompt computed once, the samples forked into rows of their own; each
    sample's seeded tokens equal today's path's (and a single seeded request's)."""
    _, plain, ragged = engines
    prompt = _prompts(1, lengths=(19,))[0]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11, ignore_eos=True)
    results = []
    for engine in (ragged, plain):
        sched = Scheduler(engine, prefill_chunk=4, prefix_cache_gb=0)
        other = sched.submit(_prompts(2)[1], SamplingParams(max_new_tokens=12, temperature=0.8, seed=3,
                                                            ignore_eos=True))
        sched.step()
        group = sched.submit_n(prompt, params, 3)
        sched.run_until_idle()
        assert sched.stats.prefills == 2
        results.append([other, *group])
    _same(*results)
    assert len({tuple(r.completion().token_ids) for r in results[0][1:]}) == 3


def test_echo_prompt_logprobs_equal_the_reference(engines):
    """prompt_logprobs (echo) from the mixed steps' chunk logits: log-softmax of mixtral_ref's logits (1e-4)."""
    reference, _, ragged = engines
    prompts = _prompts(2, lengths=(13, 21))
    sched = Scheduler(ragged, prefill_chunk=5, prefix_cache_gb=0.01)
    runner = sched.submit(prompts[0], SamplingParams(max_new_tokens=10, ignore_eos=True))
    sched.step()
    echo = sched.submit(prompts[1], SamplingParams(max_new_tokens=0, prompt_logprobs=1))
    sched.run_until_idle()
    assert runner.status == echo.status == "done"
    got = echo.completion().prompt_logprobs
    with torch.no_grad():
        want = torch.log_softmax(reference(torch.tensor([prompts[1]]))[0].double(), -1)  # [T, V]
    assert got[0] is None and len(got) == len(prompts[1])
    err = max(abs(got[j].logprob - float(want[j - 1, prompts[1][j]])) for j in range(1, len(prompts[1])))
    assert err <= LOGPROB_TOL, err


def test_cancellation_and_engine_failure(engines, monkeypatch):
    """A running row and an entering prompt cancelled mid-way leave, the others' replies unchanged; a failed call
    fails every request in flight (their one call carried them all) and the scheduler serves the next ones."""
    _, plain, ragged = engines
    jobs = [(p, SamplingParams(max_new_tokens=15, ignore_eos=True)) for p in _prompts(4, lengths=(6, 40, 8, 9))]
    sched = Scheduler(ragged, prefill_chunk=4, prefix_cache_gb=0)
    got = [sched.submit(p, q) for p, q in jobs[:2]]
    for _ in range(4):
        sched.step()
    got[0].cancel()  # running
    got[1].cancel()  # still entering (40 tokens)
    got += [sched.submit(p, q) for p, q in jobs[2:]]
    sched.run_until_idle()
    assert got[0].status == got[1].status == "cancelled" and sched.stats.cancelled == 2
    _, want = _serve(plain, jobs[2:], steps_between=0, prefill_chunk=4, prefix_cache_gb=0)
    _same(got[2:], want)
    run = ragged.runner.run
    a = sched.submit(jobs[0][0], jobs[0][1])
    sched.step()
    b = sched.submit(jobs[1][0], jobs[1][1])
    monkeypatch.setattr(ragged.runner, "run", lambda *a: (_ for _ in ()).throw(RuntimeError("device lost")))
    sched.step()
    assert a.status == b.status == "failed" and "RuntimeError: device lost" in b.error
    assert sched.running == sched.prefilling == 0 and len(sched._batch) == 0
    monkeypatch.setattr(ragged.runner, "run", run)
    c = sched.submit(*jobs[2])
    sched.run_until_idle()
    _same([c], want[:1])


def test_expert_load_counts_the_same_tokens(engines):
    """expert_load on mixed steps: every computed token's experts, the same counts as today's path."""
    _, plain, ragged = engines
    jobs = [(p, SamplingParams(max_new_tokens=5, ignore_eos=True)) for p in _prompts(3)]
    counts = []
    for engine in (ragged, plain):
        sched, _ = _serve(engine, jobs, steps_between=1, prefill_chunk=4, prefix_cache_gb=0, expert_load=True)
        counts.append(sched.stats.expert_tokens)
    cfg = ragged.config
    tokens = sum(len(p) + q.max_new_tokens - 1 for p, q in jobs)
    assert counts[0].sum() == tokens * cfg.num_layers * cfg.top_k
    assert np.array_equal(counts[0], counts[1]), (counts[0], counts[1])


@pytest.mark.parametrize("kv_cache", ["float", "int8"])
def test_sliding_window_and_int8_cache(tmp_path_factory, kv_cache):
    """A sliding window of 5 (float and int8 caches: codes and scales packed alike): rows longer than the window,
    joining at different times, with the prefix cache's second turn: the same greedy tokens as today's path."""
    _, plain, ragged = _engines(tmp_path_factory, 5, kv_cache)
    jobs = [(p, SamplingParams(max_new_tokens=9, ignore_eos=True)) for p in _prompts(3, lengths=(17, 6, 26))]
    sched, got = _serve(ragged, jobs, prefill_chunk=4, prefix_cache_gb=0.01)
    _, want = _serve(plain, jobs, prefill_chunk=4, prefix_cache_gb=0)
    _same(got, want)
    again = [(p + r.completion().token_ids + [4, 5], q) for (p, q), r in zip(jobs, got, strict=True)]
    got = [sched.submit(p, q) for p, q in again]
    sched.run_until_idle()
    _, want = _serve(plain, again, steps_between=0, prefill_chunk=4, prefix_cache_gb=0)
    _same(got, want)
    assert sched.stats.cached_prompt_tokens > 0


def test_the_default_chunk_follows_the_engine(engines):
    """prefill_chunk left at its default: DEFAULT_MIXED_CHUNK on a ragged engine (mixed steps), today's 256 else."""
    from mixtral_trt.runtime import scheduler as sch

    _, plain, ragged = engines
    assert Scheduler(ragged).prefill_chunk == sch.DEFAULT_MIXED_CHUNK and Scheduler(ragged)._batch is not None
    assert Scheduler(plain).prefill_chunk == sch.DEFAULT_PREFILL_CHUNK == 256 and Scheduler(plain)._batch is None
    assert Scheduler(ragged, prefill_chunk=7).prefill_chunk == 7


def test_the_packed_cache_may_outgrow_one_rows_context(engines):
    """Every row's tokens in one sequence: 4 rows of 100+ tokens pack more slots than the engine's max_seq (256),
    which bounds each row alone; the replies still equal today's path."""
    _, plain, ragged = engines
    jobs = [(p, SamplingParams(max_new_tokens=6, ignore_eos=True)) for p in _prompts(4, lengths=(100, 110, 95, 120))]
    sched = Scheduler(ragged, prefill_chunk=None, prefix_cache_gb=0)
    got = [sched.submit(p, q) for p, q in jobs]
    sched.step()
    sched.step()
    assert sched._batch.cache.length > ragged.max_seq == 256
    sched.run_until_idle()
    _, want = _serve(plain, jobs, steps_between=0, prefill_chunk=None, prefix_cache_gb=0)
    _same(got, want)
