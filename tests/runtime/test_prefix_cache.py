"""Prefix caching and chunked prefill (runtime/prefix_cache.py, prefill.py, the Scheduler's options).

Oracle: the Scheduler without either (every prompt prefilled whole, itself equal to each request served
alone: test_scheduler.py). 8 concurrent conversations of 3 turns sharing a system + tools prefix, greedy
and seeded sampling, give the same tokens with the prefix cache, with chunked prefill and with both, while
the cache serves most prompt tokens. The store's budget, LRU order, pins and bad inputs are checked on its
own bookkeeping."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.engine import Engine
from mixtral_trt.runtime.prefix_cache import GIB, PrefixCache, engine_identity
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import Scheduler

CLIENTS, TURNS = 8, 3
SYSTEM = ("You are a meticulous assistant for a travel agency. Answer in one short paragraph, cite the tool you "
          "would call, and never invent prices. Tools available to you, as JSON schemas: ")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                         "required": ["city"]}}},
         {"type": "function", "function": {"name": "book_hotel", "description": "Book a room",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "nights": {"type": "integer"},
                                                          "guests": {"type": "integer"}}, "required": ["city"]}}}]
CITIES = ["Zürich", "Lyon", "Kyoto", "Porto", "Oslo", "Quito", "Accra", "Hanoi"]


@pytest.fixture(scope="module")
def engine(tiny_v3_engine_dir):
    """A private Engine of the v3 tiny engine (max_seq 1024, max_batch 4): its prefix cache is its own."""
    return runtime.load(tiny_v3_engine_dir)


def _settings(client: int) -> SamplingParams:
    if client % 3 == 2:  # seeded sampling
        return SamplingParams(max_new_tokens=9, temperature=0.9, top_p=0.95, seed=client, ignore_eos=True)
    return SamplingParams(max_new_tokens=7 + client % 4, ignore_eos=True)


def _converse(engine: Engine, **options) -> tuple[dict[tuple[int, int], list[int]], Scheduler]:
    """Every client's 3 turns through one Scheduler, each turn submitted as soon as the client's previous one
    is done (so turns of different clients share steps): {(client, turn): reply ids}."""
    tok = engine.tokenizer
    shared = tok.encode(SYSTEM + json.dumps(TOOLS))  # [BOS] + the system + tools block
    history = {c: list(shared) for c in range(CLIENTS)}
    replies, pending = {}, {}
    sched = Scheduler(engine, **options)
    while len(replies) < CLIENTS * TURNS:
        for c in range(CLIENTS):
            turn = sum(k[0] == c for k in replies)
            if c not in pending and turn < TURNS:
                question = tok.encode(f" [{turn}] Plan {turn + 2} days in {CITIES[c]} for {c + 1} people.")[1:]
                history[c] += question
                pending[c] = (turn, sched.submit(history[c], _settings(c), tokenizer=tok))
        sched.step()
        for c, (turn, request) in list(pending.items()):
            if request.done:
                assert request.status == "done", request.error
                replies[c, turn] = ids = request.completion().token_ids
                history[c] += ids
                del pending[c]
    return replies, sched


def test_conversations_equal_with_prefix_cache_and_chunked_prefill(engine):
    want, plain = _converse(engine, prefix_cache_gb=0, prefill_chunk=None)
    assert plain.prefix_cache is None and plain.stats.prefill_chunks == plain.stats.prefills == CLIENTS * TURNS
    for options in (dict(prefix_cache_gb=0.05, prefill_chunk=None), dict(prefix_cache_gb=0, prefill_chunk=40),
                    dict(prefix_cache_gb=0.05, prefill_chunk=24)):
        got, sched = _converse(engine, **options)
        diff = [k for k in want if got[k] != want[k]]
        assert not diff, f"{options}: {len(diff)} replies differ, first {diff[0]}: {got[diff[0]]} != {want[diff[0]]}"
        stats = sched.stats
        assert stats.prompt_tokens == plain.stats.prompt_tokens
        if options["prefix_cache_gb"]:
            # after the first prompt, every prompt finds at least the shared prefix; later turns their whole chat
            share = stats.cached_prompt_tokens / stats.prompt_tokens
            assert share > 0.75, f"{options}: only {share:.0%} of prompt tokens came from the prefix cache"
            assert sched.prefix_cache.stats.hit_tokens == stats.cached_prompt_tokens
        if options["prefill_chunk"]:
            assert stats.prefill_chunks > stats.prefills  # prompts did enter in several chunks
        assert max(stats.batch_sizes) >= 2  # rows shared steps (whole-prompt runs fill all 4)


def test_a_long_prompt_enters_in_chunks_while_rows_decode(engine):
    """With a budget of 32 tokens, a 300-token newcomer takes 10 steps to join; the running row gains a
    token at every one of them, and both replies equal their runs alone."""
    sched = Scheduler(engine, prefix_cache_gb=0, prefill_chunk=32)
    short = sched.submit([1, 40, 41, 42], SamplingParams(max_new_tokens=30, ignore_eos=True))
    sched.step()
    rng = np.random.default_rng(0)
    long_prompt = [1, *rng.integers(100, 30000, 299).tolist()]
    long = sched.submit(long_prompt, SamplingParams(max_new_tokens=5, ignore_eos=True))
    before = len(short.reply.token_ids)
    for step in range(9):
        sched.step()
        assert sched.prefilling == 1 and sched.running == 1, step
        assert len(short.reply.token_ids) == before + step + 1 and not long.reply.token_ids
    sched.step()  # the last 12 tokens: the newcomer samples its first token and joins the batch
    assert sched.running == 2 and len(long.reply.token_ids) == 2
    sched.run_until_idle()
    for request, prompt, n in ((short, [1, 40, 41, 42], 30), (long, long_prompt, 5)):
        assert request.completion().token_ids == engine.generate(prompt, max_new_tokens=n, ignore_eos=True).token_ids


def test_engine_users_get_the_prefix_cache(engine):
    prompt = engine.tokenizer.encode(SYSTEM + json.dumps(TOOLS) + " Where to in spring?")
    want = engine.generate(prompt, max_new_tokens=8, ignore_eos=True).token_ids
    cache = engine.enable_prefix_cache(0.01, block_size=32)
    try:
        first = engine.generate([prompt, prompt[:100]], max_new_tokens=8, ignore_eos=True)  # stores both
        stored = len(cache)
        assert stored == len(prompt) // 32 and cache.stats.hit_tokens == 96  # prompt[:100] starts as prompt
        again = engine.generate(prompt, max_new_tokens=8, ignore_eos=True)
        assert cache.stats.hit_tokens >= (len(prompt) - 1) // 32 * 32
        assert first[0].token_ids == again.token_ids == want
        sched = Scheduler(engine)  # no budget of its own: it shares the engine's cache
        assert sched.prefix_cache is cache
    finally:
        engine.disable_prefix_cache()


# ---- the store on its own ---------------------------------------------------------------------------
def _kv(engine: Engine, tokens: list[int]):
    _, cache = engine.forward(np.asarray([tokens]))
    return cache.row_kv(0)


def test_budget_lru_and_pins(engine):
    block = 8
    probe = PrefixCache(engine, 0.001, block)
    store = PrefixCache(engine, (3 * probe.block_bytes + 1) / GIB, block)  # room for 3 blocks
    assert store.capacity_blocks == 3
    rng = np.random.default_rng(1)
    a, b = (rng.integers(5, 30000, 41).tolist() for _ in range(2))
    assert store.store(a, *_kv(engine, a)) == 3 and len(store) == 3  # 5 full blocks; room for the first 3
    match = store.match(a)
    assert match.tokens == 24 and store.stats.hit_tokens == 24
    assert store.store(b, *_kv(engine, b)) == 0  # every block is pinned by `match`: nothing evicted
    store.release(match)
    assert store.store(b[:17], *_kv(engine, b[:17])) == 2  # evicts a's last two blocks, its tail first
    assert store.match(a).tokens == 8 and store.stats.evicted_blocks == 2
    # a match leaves one token to compute, and the matched KV is the stored KV
    exact = store.match(b[:17])
    assert exact.tokens == 16
    keys, _ = _kv(engine, b[:17])
    np.testing.assert_allclose(store.cache(exact).keys[1][0], keys[1][:, :16], rtol=1e-6, atol=1e-6)
    assert store.match(b[:16]).tokens == 8


def test_chains_name_the_engine_and_every_token_before(engine, tiny_engine):
    assert engine_identity(engine) != engine_identity(tiny_engine)
    store = PrefixCache(engine, 0.001, 4)
    other = PrefixCache(tiny_engine, 0.001, 4)
    tokens = [1, 2, 3, 4, 5, 6, 7, 8]
    assert store.chain(tokens) != other.chain(tokens)
    assert store.chain(tokens)[1] != store.chain([9, 2, 3, 4, 5, 6, 7, 8])[1]  # the first block changes the second
    assert len(store.chain(tokens[:7])) == 1


def test_bad_inputs_are_one_line_errors(engine):
    with pytest.raises(MixtralTrtError, match=r"^prefix_cache_gb=1e\+06: larger than the [\d.]+ GiB of host memory "
                                              r"available$"):
        engine.enable_prefix_cache(1e6)
    assert engine.prefix_cache is None
    for gb in (0, -1, float("nan"), "1", True):
        with pytest.raises(MixtralTrtError, match=r"^prefix_cache_gb=.*: must be a number > 0 \(GiB\)$"):
            PrefixCache(engine, gb)
    with pytest.raises(MixtralTrtError, match=r"block_size=0: must be an integer >= 1"):
        PrefixCache(engine, 0.01, 0)
    with pytest.raises(MixtralTrtError, match=r"smaller than one block"):
        PrefixCache(engine, 1e-9)
    with pytest.raises(MixtralTrtError, match=r"^prefix_cache_gb=-1: must be a number > 0"):
        Scheduler(engine, prefix_cache_gb=-1)
    with pytest.raises(MixtralTrtError, match=r"^prefill_chunk=0: must be an integer >= 1"):
        Scheduler(engine, prefill_chunk=0)
    sharded = Engine(engine.path, dataclasses.replace(
        engine.manifest, backend_info={**engine.manifest.backend_info, "tensor_parallel": {"world_size": 2}}),
        engine.runner)
    with pytest.raises(MixtralTrtError, match=r"^prefix caching is not supported on tensor-parallel engines"):
        sharded.enable_prefix_cache(0.01)
    assert Scheduler(sharded).prefix_cache is None  # by default: on where supported, off elsewhere
    assert Scheduler(engine).prefix_cache is not None


def test_a_prompt_cancelled_or_failing_while_it_enters_frees_its_row(engine, monkeypatch):
    sched = Scheduler(engine, max_batch=1, prefix_cache_gb=0.01, prefill_chunk=16)
    rng = np.random.default_rng(2)
    long_prompt = [1, *rng.integers(100, 30000, 99).tolist()]
    gone = sched.submit(long_prompt, SamplingParams(max_new_tokens=4))
    nxt = sched.submit([1, 7, 8, 9], SamplingParams(max_new_tokens=3, ignore_eos=True))
    sched.step()
    assert sched.prefilling == 1 and sched.waiting == 1  # the one row is taken by the entering prompt
    gone.cancel()
    sched.step()  # the cancelled prompt leaves; the next request takes the row and enters whole
    assert gone.status == "cancelled" and not gone.reply.token_ids and sched.running == 1
    sched.run_until_idle()
    assert nxt.completion().token_ids == engine.generate([1, 7, 8, 9], max_new_tokens=3, ignore_eos=True).token_ids
    forward = engine.forward
    calls = []

    def flaky(ids, cache=None, **kw):
        calls.append(ids.shape)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return forward(ids, cache, **kw)

    monkeypatch.setattr(engine, "forward", flaky)
    broken = sched.submit(long_prompt, SamplingParams(max_new_tokens=4))
    sched.run_until_idle()  # its second chunk fails: that request only
    assert broken.status == "failed" and "RuntimeError: device lost" in broken.error and sched.prefilling == 0
    monkeypatch.setattr(engine, "forward", forward)
    again = sched.submit(long_prompt, SamplingParams(max_new_tokens=4, ignore_eos=True))
    sched.run_until_idle()
    assert again.completion().token_ids == engine.generate(long_prompt, max_new_tokens=4, ignore_eos=True).token_ids
    assert all(b.pins == 0 for b in sched.prefix_cache._blocks.values())  # every match was released
