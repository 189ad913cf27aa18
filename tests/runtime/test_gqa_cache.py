"""The KV cache of GroupQueryAttention engines (runtime/gqa_cache.py): Engine.forward keeps its meaning
(left-padded batches, rows that finish early) over the op's right-padded shared buffer. Oracle: the
canonical (Concat) engine of the same export, itself judged against mixtral_ref in tests/parity."""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.exporter.build import build_engine
from support.models import GQA_TOP3, export_dir, random_model


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(ort engine, ort-gqa engine) of one fp32 export."""
    onnx_dir = export_dir(tmp_path_factory, random_model(GQA_TOP3, seed=3), "fp32", "gqa-cache", max_seq=600)
    root = tmp_path_factory.mktemp("gqa-cache-engines")
    return tuple(runtime.load(build_engine(onnx_dir, root / b, b)) for b in ("ort", "ort-gqa"))


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, GQA_TOP3.vocab_size, n).tolist() for n in lengths]


def test_batched_generation_equals_the_concat_engine(engines):
    """Left-padded prompts of different lengths, one row stopping early: every row's tokens are equal."""
    concat, gqa = engines
    prompts = _prompts((9, 3, 17))
    alone = concat.generate(prompts[1], max_new_tokens=12, ignore_eos=True).token_ids
    stop = (alone[3],)  # row 1 finishes at step 3 and keeps a masked row while the others go on
    want = concat.generate(prompts, max_new_tokens=12, ignore_eos=True, stop_token_ids=stop)
    got = gqa.generate(prompts, max_new_tokens=12, ignore_eos=True, stop_token_ids=stop)
    assert len(want[1].token_ids) == 4
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    logits_c = concat.forward(np.array([prompts[2]]))[0]["logits"]
    logits_g = gqa.forward(np.array([prompts[2]]))[0]["logits"]
    assert np.abs(logits_g - logits_c).max() / np.abs(logits_c).max() < 1e-5


def test_decode_steps_keep_their_logits_across_a_capacity_growth(engines):
    """Decode through the runner's kept IO binding and the cache's logits buffer: each step's logits are the
    concat engine's, an earlier step's array is not overwritten by later steps, and the buffers' growth past
    MIN_CAPACITY slots (new OrtValues, rebound) changes nothing."""
    from mixtral_trt.runtime.gqa_cache import MIN_CAPACITY

    concat, gqa = engines
    prompt = np.array(_prompts((MIN_CAPACITY - 2,), seed=4))
    (out_c, cache_c), (out_g, cache_g) = concat.forward(prompt), gqa.forward(prompt)
    kept, capacities = [], []
    for token in (5, 9, 13, 21, 34):
        out_c, cache_c = concat.forward(np.array([[token]]), cache_c)
        out_g, cache_g = gqa.forward(np.array([[token]]), cache_g)
        kept.append((out_g["logits"], out_g["logits"].copy(), out_c["logits"]))
        capacities.append(cache_g.capacity)
    assert capacities[0] == MIN_CAPACITY and capacities[-1] > MIN_CAPACITY, capacities
    for got, snapshot, want in kept:
        np.testing.assert_array_equal(got, snapshot)  # not a view of a buffer the next step writes
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-5, np.abs(got - want).max()


def test_threads_decoding_on_one_engine_get_their_own_logits(engines):
    """Two threads decode their own caches through one runner at once (a server's generate() beside a Scheduler's
    thread): the one holding the runner's kept IO binding uses it, the other a fresh binding; each gets exactly the
    logits it gets alone."""
    import threading

    _, gqa = engines
    prompts = [np.array(p)[None] for p in _prompts((7, 12), seed=6)]

    def decode(prompt, steps=6):
        out, cache = gqa.forward(prompt)
        got = []
        for _ in range(steps):
            out, cache = gqa.forward(out["logits"][:, -1:].argmax(-1), cache)
            got.append(out["logits"])
        return np.concatenate(got, axis=1)

    alone = [decode(p) for p in prompts]
    together: list = [None, None]
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, [decode(prompts[i]) for _ in range(4)]))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for got in together[i]:
            np.testing.assert_array_equal(got, alone[i])


def test_rows_stay_right_padded(engines):
    _, gqa = engines
    ids = np.array([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    _, cache = gqa.forward(ids, attention_mask=mask, position_ids=np.maximum(mask.cumsum(1) - 1, 0))
    assert cache.lengths.tolist() == [2, 4] and cache.length == 4
    step_mask = np.concatenate([mask, [[0], [1]]], axis=1)  # row 0 adds nothing this step
    _, cache = gqa.forward(np.array([[0], [11]]), cache, attention_mask=step_mask)
    assert cache.lengths.tolist() == [2, 5] and cache.length == 5
    picked = cache.select([1])
    assert picked.lengths.tolist() == [5] and picked.batch == 1


def test_calls_the_op_cannot_take_are_refused(engines):
    _, gqa = engines
    ids = np.array([[5, 6, 7], [8, 9, 10]])
    _, cache = gqa.forward(ids)
    with pytest.raises(MixtralTrtError, match="several tokens on a cache at batch 1 only"):
        gqa.forward(ids[:, :2], cache)
    with pytest.raises(MixtralTrtError, match="cached part marks"):
        gqa.forward(ids[:, :1], cache, attention_mask=np.array([[0, 1, 1, 1], [1, 1, 1, 1]]))
    with pytest.raises(MixtralTrtError, match="position_ids: row 0"):
        gqa.forward(ids[:, :1], cache, position_ids=np.array([[7], [3]]))


def test_the_scheduler_runs_on_the_shared_buffer(engines):
    """Requests joining and leaving a running batch (GQACache.concat / select / trim) get the concat
    engine's solo replies."""
    from mixtral_trt.runtime.sampling import SamplingParams
    from mixtral_trt.runtime.scheduler import Scheduler

    concat, gqa = engines
    prompts = _prompts((9, 3, 17, 5), seed=4)
    news = (12, 4, 9, 7)
    sched = Scheduler(gqa, max_batch=3)
    requests = [sched.submit(p, SamplingParams(max_new_tokens=n, ignore_eos=True))
                for p, n in zip(prompts[:2], news[:2], strict=True)]
    sched.step()
    sched.step()
    requests += [sched.submit(p, SamplingParams(max_new_tokens=n, ignore_eos=True, temperature=0.9, seed=2))
                 for p, n in zip(prompts[2:], news[2:], strict=True)]
    sched.run_until_idle()
    assert max(sched.stats.batch_sizes) == 3
    for n, (request, prompt, new) in enumerate(zip(requests, prompts, news, strict=True)):
        settings = dict(temperature=0.9, seed=2) if n >= 2 else {}
        want = concat.generate(prompt, max_new_tokens=new, ignore_eos=True, **settings).token_ids
        assert request.completion().token_ids == want, f"request {n}"


def test_prefix_cache_and_chunked_prefill_on_the_shared_buffer(engines):
    """Prompts sharing a 40-token prefix, entering in chunks of 16 over GQACaches built from stored blocks
    (GQACache.from_kv / row_kv), and Engine.generate over the same store: the concat engine's tokens."""
    from mixtral_trt.runtime.sampling import SamplingParams
    from mixtral_trt.runtime.scheduler import Scheduler

    concat, gqa = engines
    shared = _prompts((40,), seed=6)[0]
    prompts = [shared + tail for tail in _prompts((5, 9, 3, 12), seed=7)]
    want = [concat.generate(p, max_new_tokens=8, ignore_eos=True).token_ids for p in prompts]
    sched = Scheduler(gqa, prefix_cache_gb=0.01, prefill_chunk=16)
    first = [sched.submit(p, SamplingParams(max_new_tokens=8, ignore_eos=True)) for p in prompts[:2]]
    sched.step()
    later = [sched.submit(p, SamplingParams(max_new_tokens=8, ignore_eos=True)) for p in prompts[2:]]
    sched.run_until_idle()
    assert [r.completion().token_ids for r in first + later] == want
    assert sched.stats.cached_prompt_tokens >= 2 * 32 and sched.stats.prefill_chunks > 4
    gqa.enable_prefix_cache(0.01)
    try:
        got = gqa.generate(prompts, max_new_tokens=8, ignore_eos=True)
        again = gqa.generate(prompts[::-1], max_new_tokens=8, ignore_eos=True)
    finally:
        gqa.disable_prefix_cache()
    assert [g.token_ids for g in got] == want and [g.token_ids for g in again] == want[::-1]
