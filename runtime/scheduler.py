"""Iteration-level batching: concurrent requests share engine steps, joining and leaving between steps.

Each step feeds one token per running request as one batch over the KV cache. A request that arrives
while others decode is prefilled on its own cache (`runtime/prefill.py`): first the blocks the prefix
cache holds of its prompt (`runtime/prefix_cache.py`: a shared system prompt, the previous turn of a
chat), then the rest in chunks of at most `prefill_chunk` prompt tokens per step, interleaved with the
running rows' decode steps, so a long newcomer costs running rows one chunk per token instead of a whole
prefill. Its cache rows join the batch once its prompt is in (`KVCache.concat`: left padding, per-row
positions, attention mask); a request that finishes (or is cancelled) leaves at once (`KVCache.select`,
then `KVCache.trim` drops padding nobody needs any more), and its prompt and reply blocks go to the prefix
cache. Every request draws from its own Sampler (its own seeded generator, and any constraint the sampler
applies), so its reply equals the same request served alone (up to float rounding of the cached / chunked
prefill: the same tokens but for near-ties). Waiting requests are bounded: beyond `max_queue`, `submit`
raises QueueFull.

On a ragged engine (`build --ragged`) each step is instead ONE engine call (runtime/mixed_step.py): every running
row's next token and the entering prompts' next chunks (within the same budget) packed over one running batch;
a prompt that completes samples its first token from that call and decodes on from the next step in the row its
chunks filled (no join copy), so a newcomer adds its chunk's tokens to the running rows' step rather than a call
of its own. Leaving rows are marked dead and compacted away in bulk; everything else (prefix cache, logprobs,
n > 1, constraints, cancellation, stats) is the same.

The scheduler knows nothing of HTTP: a server submits requests from any thread and gets each token
through `on_event`, called on the scheduler's thread. B running requests, V vocab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_int

from .generation import check_prompts
from .kv_cache import KVCache
from .logprobs import token_logprob
from .mixed_step import MixedBatch, mixed_steps
from .prefill import Prefill
from .prefix_cache import DEFAULT_BUDGET_GB, GIB, PrefixCache, available_bytes, block_device, unsupported
from .reply import Completion, Reply, StreamEvent
from .routing import engine_routing, expert_counts
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from .constrained import Constraint
    from .engine import Engine


class QueueFull(MixtralTrtError):
    """The scheduler already holds `max_queue` waiting requests."""


class ShuttingDown(MixtralTrtError):
    """The scheduler is stopping and takes no new request."""


@dataclass
class Stats:
    steps: int = 0  # batched decode steps
    prefills: int = 0  # prompts completed
    prefill_chunks: int = 0  # prompt chunks computed: an engine call each, or on mixed steps a part of the step's call
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, served by the prefix cache
    generated_tokens: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    compactions: int = 0  # mixed steps: times the packed cache dropped the slots of rows that left
    batch_sizes: dict[int, int] = field(default_factory=dict)  # rows -> steps run with that many
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=4096))  # (time, new tokens)
    expert_tokens: np.ndarray | None = None  # [L, E] tokens routed to each expert (Scheduler(expert_load=True))

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Tokens generated per second over the last `window` seconds."""
        now = time.perf_counter()
        return sum(n for t, n in list(self.recent) if t >= now - window) / window


class Request:
    """One prompt in the scheduler. `status`: waiting -> running -> done | cancelled | failed."""

    _ids = itertools.count()

    def __init__(self, prompt: list[int], params: SamplingParams, reply: Reply, sampler: Sampler,
                 on_event: Callable[[StreamEvent], None] | None,
                 on_done: Callable[[Request], None] | None) -> None:
        self.id = next(self._ids)
        self.prompt, self.params, self.reply, self.sampler = prompt, params, reply, sampler
        self.on_event, self.on_done = on_event, on_done
        self.status = "waiting"
        self.error: str | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.next_token: int | None = None  # sampled, not yet fed to the engine
        self.prefill: Prefill | None = None  # while its prompt enters
        self.group: list[Request] = [self]  # the samples sharing its prefill (submit_n); the first holds it
        self._cancel = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        """Stop generating; the row leaves the batch before the next step."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def completion(self) -> Completion:
        return self.reply.completion()


AUTO = "auto"  # prefill_chunk sized from measured step times (Scheduler.chunk_budget)
AUTO_TARGET = 0.75  # an "auto" chunk costs at most this fraction of a decode step: a mixed step stays under 2x
AUTO_MIN, AUTO_MAX = 16, 512  # "auto" chunk bounds (tokens); AUTO_MAX also when no row decodes
# On mixed steps (a ragged engine) the chunk rides in the rows' own call, so what the rows feel is that call's
# time; a chunk's cost is not per token there (a token costs mostly the experts it adds to those the rows read,
# fewer per token as the chunk grows), so "auto" steers by the calls themselves: one token more after a mixed step
# while their running mean stays within 1 + AUTO_MIXED_TARGET decode steps, a quarter fewer while it is beyond,
# from AUTO_MIXED_START, never under 1 (the mean, not each step: single slow steps on a shared machine would
# otherwise keep the chunk at one token).
AUTO_MIXED_TARGET, AUTO_MIXED_START = 0.5, 4
# Measured (bench/scheduler_load.py, README "Serving"): on a CPU any chunk of 16+ tokens reads every expert, more
# than a decode step does, so "auto" sits at AUTO_MIN there, for 6x the newcomer's first-token time and more work
# in all; 256 keeps both low. "auto" is for engines where a chunk costs less than a decode step.
DEFAULT_PREFILL_CHUNK: int | str = 256
# Mixed steps (a ragged engine): the chunk rides in the rows' own call, so its tokens are all it adds to their step,
# and on a CPU each of them mostly adds experts to read. A 2,048-token prompt joining 3 decoding rows (README
# "Mixed steps", quiet runs): chunks of 4 kept the rows' p99 gap at 1.74-1.89x their steady step for the newcomer's
# first token in 16-17 s; 16: 2.75-2.88x, 5.5 s; "auto" 1.49-1.75x but 36-46 s (each step also copies the packed
# cache, which grows with the join, so its mean step drifts above the target whatever the chunk).
DEFAULT_MIXED_CHUNK: int | str = 4
DEFAULT = "default"  # prefill_chunk: DEFAULT_MIXED_CHUNK on a ragged engine (mixed steps), else 256


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int | None = None, max_queue: int = 64,
                 prefix_cache_gb: float | None = None, prefill_chunk: int | str | None = DEFAULT,
                 expert_load: bool = False) -> None:
        """`prefix_cache_gb`: the prefix cache's budget in GiB; None: the engine's own cache when it has one
        (`Engine.enable_prefix_cache`), else DEFAULT_BUDGET_GB (at most a quarter of the free memory) where the
        engine supports one and none where it does not; 0: no prefix cache. `prefill_chunk`: the most prompt
        tokens computed per step (None: each prompt in one step; "auto": sized from the measured step times so
        that a chunk costs at most AUTO_TARGET of a decode step, see `chunk_budget`; DEFAULT: DEFAULT_MIXED_CHUNK
        on a ragged engine, whose steps are mixed, else DEFAULT_PREFILL_CHUNK). `expert_load`: count the
        experts of every token the engine computes (prompt and generated; not those the prefix cache serves) in
        `stats.expert_tokens`."""
        if max_batch is not None and not 1 <= max_batch <= engine.max_batch:
            raise MixtralTrtError(f"max_batch={max_batch}: must be between 1 and the engine's max batch "
                                  f"{engine.max_batch}")
        if max_queue < 0:
            raise MixtralTrtError(f"max_queue={max_queue}: must be >= 0")
        if prefill_chunk == DEFAULT:
            prefill_chunk = DEFAULT_MIXED_CHUNK if mixed_steps(engine) else DEFAULT_PREFILL_CHUNK
        if prefill_chunk is not None and prefill_chunk != AUTO:
            prefill_chunk = as_int("prefill_chunk", prefill_chunk, 1,
                                   hint=f"(prompt tokens per step; {AUTO!r}: from measured step times; None: whole "
                                        "prompts)")
        self.engine = engine
        self.max_batch = max_batch or engine.max_batch
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.prefix_cache = _prefix_cache(engine, prefix_cache_gb)
        self.stats = Stats()
        # count every token's experts (prompt and generated) from the engine's router outputs (--debug-outputs)
        self._router_names = engine.contract.names("router_logits") if expert_load else []
        if expert_load and not self._router_names:
            raise MixtralTrtError(f"{engine.path}: no router outputs to count expert load from (export "
                                  "--debug-outputs)")
        self._waiting: deque[Request] = deque()
        self._prefilling: list[Request] = []  # admitted, their prompts entering (each holds a row)
        self._running: list[Request] = []  # row b of the cache is _running[b]
        self._cache: KVCache | None = None
        self._batch = MixedBatch(engine) if mixed_steps(engine) else None  # a ragged engine's packed running batch
        self._decode_s: float | None = None  # running mean of a decode step's time ("auto" chunks)
        self._prefill_token_s: float | None = None  # running mean of a prompt token's time in a chunk
        self._mixed_chunk = float(AUTO_MIXED_START)  # "auto" on mixed steps: the chunk, steered by their time
        self._mixed_ratio: float | None = None  # running mean of a mixed step's time in decode steps
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ---- submitting (any thread) -------------------------------------------------------------------
    def submit(self, prompt: Sequence[int], params: SamplingParams, *, constraint: Constraint | None = None,
               sampler: Sampler | None = None, tokenizer=None, on_event: Callable[[StreamEvent], None] | None = None,
               on_done: Callable[[Request], None] | None = None) -> Request:
        """Queue one prompt (ids). `constraint`: a fresh grammar constraint for this reply (the Sampler
        applies it, and it may end the reply); or `sampler`: a ready Sampler. `tokenizer` gives the reply
        its text and stop strings. Raises MixtralTrtError when it cannot run (too long, bad ids), QueueFull when
        `max_queue` requests already wait, ShuttingDown after `shutdown`."""
        ids = check_prompts(self.engine, [prompt], params)[0]
        reply = Reply(0, len(ids), params, self.engine.config.eos_token_id, tokenizer)
        request = Request(ids, params, reply, sampler or Sampler(params, ids, constraint), on_event, on_done)
        self._queue(request)
        return request

    def submit_n(self, prompt: Sequence[int], params: SamplingParams, n: int, *,
                 constraints: Sequence[Constraint | None] | None = None, tokenizer=None,
                 on_event: Callable[[StreamEvent], None] | None = None,
                 on_done: Callable[[Request], None] | None = None) -> list[Request]:
        """`n` independent samples of one prompt (OpenAI's `n`) sharing one prefill: they are admitted
        together (n rows), the prompt is computed once, and each draws its own tokens from the same first
        logits on. Sample i's seed is `params.seed + i` (vLLM's rule), so it equals that request alone;
        its events carry index i. `constraints`: one fresh constraint per sample (None: free). Errors as
        `submit`; n above the scheduler's max batch is one."""
        n = as_int("n", n, 1, self.max_batch, hint=f"(each sample needs a row; the scheduler's max batch is "
                                                     f"{self.max_batch})")
        ids = check_prompts(self.engine, [prompt], params)[0]
        constraints = list(constraints) if constraints is not None else [None] * n
        if len(constraints) != n:
            raise MixtralTrtError(f"constraints: {len(constraints)} for n={n} samples")
        group = []
        for i, constraint in enumerate(constraints):
            own = params if params.seed is None else dataclasses.replace(params, seed=params.seed + i)
            reply = Reply(i, len(ids), own, self.engine.config.eos_token_id, tokenizer)
            group.append(Request(ids, own, reply, Sampler(own, ids, constraint), on_event, on_done))
        for request in group:
            request.group = group
        self._queue(group[0])
        return group

    def _queue(self, request: Request) -> None:
        with self._lock:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if self.waiting >= self.max_queue:
                raise QueueFull(f"{self.waiting} requests are already waiting (the queue holds "
                                f"{self.max_queue}): retry later")
            self._waiting.append(request)
            self._lock.notify()

    @property
    def waiting(self) -> int:
        """Requests waiting for a row (cancelled ones no longer count)."""
        return sum(not all(m.cancelled for m in r.group) for r in list(self._waiting))

    @property
    def alive(self) -> bool:
        """True while the background thread runs steps."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> int:
        """Requests in the decoding batch."""
        return len(self._running)

    @property
    def prefilling(self) -> int:
        """Requests whose prompts are entering (chunked prefill; n samples of one prompt count n)."""
        return sum(len(r.group) for r in self._prefilling)

    # ---- the loop ------------------------------------------------------------------------------------
    def start(self) -> Scheduler:
        """Run steps on a background thread until `shutdown`."""
        self._thread = threading.Thread(target=self._loop, name="mixtral-scheduler", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, timeout: float | None = None) -> None:
        """Take no new request; let running and waiting requests finish for up to `timeout` seconds
        (None: until they are done), then cancel what is left and stop the thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            while self._thread.is_alive() and self._busy:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            with self._lock:
                for request in [m for r in [*self._waiting, *self._prefilling] for m in r.group] + self._running:
                    request.cancel()
                self._lock.notify()
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._busy or self._stopping):
                    self._lock.wait()
                if self._stopping and not self._busy:
                    return
            self.step()

    def run_until_idle(self) -> None:
        """Run steps on this thread until no request waits or runs (tests, offline batches)."""
        while self._busy:
            self.step()

    @property
    def _busy(self) -> bool:
        return bool(self._waiting or self._prefilling or self._running)

    # ---- one iteration ---------------------------------------------------------------------------------
    def step(self) -> None:
        """Drop cancelled requests, admit waiting ones into free rows, spend the step's prompt-token budget
        on the prompts entering (finished ones join the batch), then one decode step for all rows."""
        try:
            self._leave([r for r in self._running if r.cancelled], "cancelled")
            for request in [r for r in self._prefilling if all(m.cancelled for m in r.group)]:
                self._drop_prefill(request)
                for member in request.group:
                    self._finish(member, "cancelled")
            self._admit()
            if self._batch is not None:
                self._mixed_step()
                return
            self._prefill_step()
            if self._running:
                self._decode()
        except Exception as e:  # the engine failed: fail every request in flight, keep serving
            self._fail_all(_message(e, "engine step failed"))

    def _fail_all(self, message: str) -> None:
        self._leave(list(self._running), "failed", message)
        if self._batch is not None:  # one call carried the prompts too: they fail with it
            for request in list(self._prefilling):
                self._drop_prefill(request)
                for member in request.group:
                    if not member.done:
                        self._finish(member, "failed", message)
            self._batch.reset()

    def _drop_prefill(self, request: Request) -> None:
        """An entering prompt stops (cancelled, failed): it leaves the prompts and frees its row."""
        if request in self._prefilling:
            self._prefilling.remove(request)
        if self._batch is not None:
            self._batch.leave([request])

    def _admit(self) -> None:
        """Waiting requests take the free rows: their prompts start entering (prefix-cache blocks first)."""
        while True:
            with self._lock:
                if not self._waiting or len(self._running) + self.prefilling + len(self._waiting[0].group) \
                        > self.max_batch:
                    break
                request = self._waiting.popleft()
            if all(m.cancelled for m in request.group):
                for member in request.group:
                    self._finish(member, "cancelled")
                continue
            for member in request.group:
                member.status = "running"
            if request.params.max_new_tokens == 0 and request.params.prompt_logprobs is None:
                for member in request.group:
                    self._finish(member, "done")
                continue
            try:
                request.prefill = Prefill(self.engine, request.prompt, self.prefix_cache,
                                          request.params.prompt_logprobs, forward=self._forward)
            except Exception as e:
                for member in request.group:
                    self._finish(member, "failed", _message(e, "prefill failed"))
                continue
            self._prefilling.append(request)

    def chunk_budget(self) -> int | None:
        """The prompt tokens this step may compute: `prefill_chunk`; for "auto", AUTO_MAX while no row decodes,
        else as many as fit AUTO_TARGET of a decode step at the measured time per prompt token (running means
        of this scheduler's steps; a chunk's fixed cost makes small chunks dear per token, so the size settles
        where chunk time = the target), within [AUTO_MIN, AUTO_MAX]; on mixed steps the size steered by their
        time (AUTO_MIXED_TARGET, `_steer`)."""
        if self.prefill_chunk != AUTO:
            return self.prefill_chunk
        if not self._running:
            return AUTO_MAX
        if self._batch is not None:
            return int(self._mixed_chunk)
        if self._decode_s is None or self._prefill_token_s is None:
            return AUTO_MIN
        return int(min(max(AUTO_TARGET * self._decode_s / self._prefill_token_s, AUTO_MIN), AUTO_MAX))

    def _prefill_step(self) -> None:
        """At most `chunk_budget()` prompt tokens, oldest prompt first; complete prompts sample their first
        token and join the batch in one concat."""
        budget = self.chunk_budget()
        joining: list[KVCache] = []
        for request in list(self._prefilling):
            if budget is not None and budget <= 0:
                break
            prefill = request.prefill
            try:
                start = time.perf_counter()
                n = prefill.advance(budget)
                if n:
                    self._prefill_token_s = _mean(self._prefill_token_s, (time.perf_counter() - start) / n)
                self.stats.prefill_chunks += 1
                budget = None if budget is None else budget - n
                if not prefill.complete:
                    continue
                self._prefilling.remove(request)
                rows = self._prefilled(request)
            except Exception as e:
                if request in self._prefilling:
                    self._prefilling.remove(request)
                for member in request.group:
                    if not member.done:
                        self._finish(member, "failed", _message(e, "prefill failed"))
                continue
            for member, cache in rows:
                joining.append(cache)
                self._running.append(member)  # row order: the running batch, then the newcomers in order
        if joining:
            caches = [c for c in (self._cache, *joining) if c is not None]
            self._cache = type(caches[0]).concat(caches)  # KVCache, or another layout with the same methods

    def _prefilled(self, request: Request) -> list[tuple[Request, KVCache]]:
        """The prompt is in: each sample's first token; (sample, cache of its row) for those it does not end
        (n samples: the same batch-1 cache, which the join's concat copies into n rows)."""
        prefill = request.prefill
        self.stats.prefills += 1
        self.stats.prompt_tokens += len(request.prompt)
        self.stats.cached_prompt_tokens += prefill.cached
        cache, prefill.cache = prefill.cache, None  # None on mixed steps: the row is in the packed batch already
        rows = []
        for member in request.group:
            if member.cancelled:
                self._finish(member, "cancelled")
                continue
            member.reply.prompt_logprobs = prefill.prompt_logprobs
            # max_new_tokens 0: only the prompt's logprobs were asked for (echo); its prompt is stored already
            if member.params.max_new_tokens == 0 or self._push(member, prefill.logits):
                self._finish(member, "done")
            else:
                rows.append((member, cache))
        self.stats.recent.append((time.perf_counter(), len(request.group)))
        return rows

    def _mixed_step(self) -> None:
        """ONE call: every running row's next token and, oldest first, the entering prompts' next chunks within
        `chunk_budget()` tokens; rows sample from their own logits, completed prompts sample their first tokens."""
        batch, budget = self._batch, self.chunk_budget()
        new: dict[Request, list[int]] = {r: [r.next_token] for r in self._running}
        entering = []
        for request in list(self._prefilling):
            if budget is not None and budget <= 0:
                break
            prefill = request.prefill
            try:
                if not prefill.started:  # its row joins: empty, or holding the prefix cache's blocks of its prompt
                    prefill.start()
                    batch.join(request, None if prefill.cache is None else prefill.cache.row_kv(0))
                    prefill.cache = None
                ids = prefill.chunk(budget)
            except Exception as e:
                self._drop_prefill(request)
                for member in request.group:
                    self._finish(member, "failed", _message(e, "prefill failed"))
                continue
            new[request] = ids
            entering.append(request)
            budget = None if budget is None else budget - len(ids)
        if not new:
            return
        prompt_tokens = sum(len(new[r]) for r in entering)
        start = time.perf_counter()
        logits = self._mixed_call(new)  # an engine failure: step() fails everything in flight
        elapsed = time.perf_counter() - start
        if not prompt_tokens:
            self._decode_s = _mean(self._decode_s, elapsed)
        elif self._running and self._decode_s is not None:  # "auto" steers by the whole step, not per token
            self._steer(elapsed / self._decode_s)
        decoding = list(self._running)
        if decoding:
            self.stats.steps += 1
            self.stats.batch_sizes[len(decoding)] = self.stats.batch_sizes.get(len(decoding), 0) + 1
        self._sampled(decoding, {r: logits[r][-1] for r in decoding})
        for request in entering:
            self._entered(request, logits[request])
        self.stats.compactions = batch.compactions

    def _steer(self, ratio: float) -> None:
        """"auto" on mixed steps: a mixed step took `ratio` decode steps; one token more while their running mean
        is within the target, a quarter fewer while it is beyond."""
        self._mixed_ratio = _mean(self._mixed_ratio, ratio)
        if self._mixed_ratio > 1 + AUTO_MIXED_TARGET:
            self._mixed_chunk = max(1.0, self._mixed_chunk * 0.75)
        else:
            self._mixed_chunk = min(float(AUTO_MAX), self._mixed_chunk + 1)

    def _mixed_call(self, new: dict[Request, list[int]]) -> dict[Request, np.ndarray]:
        if not self._router_names:
            return self._batch.step(new)[0]
        logits, out = self._batch.step(new, ("logits", "router_logits"))
        self._count_experts(out)
        return logits

    def _entered(self, request: Request, logits: np.ndarray) -> None:
        """A prompt's chunk was computed (`logits` [n, V]); once complete its samples sample their first tokens and
        run on in its row (forks of it for the second sample on)."""
        prefill = request.prefill
        self.stats.prefill_chunks += 1
        try:
            prefill.took(logits)
            if not prefill.complete:
                return
            self._prefilling.remove(request)
            if self.prefix_cache is not None:
                self.prefix_cache.store(request.prompt, *self._batch.kv(request))
            rows = [member for member, _ in self._prefilled(request)]
        except Exception as e:
            self._drop_prefill(request)
            for member in request.group:
                if not member.done:
                    self._finish(member, "failed", _message(e, "prefill failed"))
            return
        if not rows:
            self._batch.leave([request])
            return
        for member in rows[1:]:
            self._batch.fork(request, member)
        if rows[0] is not request:
            self._batch.rename(request, rows[0])
        self._running.extend(rows)

    def _decode(self) -> None:
        ids = np.array([[r.next_token] for r in self._running], np.int64)  # [B, 1]
        self.stats.steps += 1
        self.stats.batch_sizes[len(ids)] = self.stats.batch_sizes.get(len(ids), 0) + 1
        start = time.perf_counter()
        out, self._cache = self._forward(ids, self._cache)  # mask and positions from the cache
        self._decode_s = _mean(self._decode_s, time.perf_counter() - start)
        logits = out["logits"][:, -1]  # [B, V]
        self._sampled(list(self._running), dict(zip(self._running, logits, strict=True)))

    def _sampled(self, requests: list[Request], logits: dict[Request, np.ndarray]) -> None:
        """Each request samples its next token from its `logits` [V]; finished and failed rows leave."""
        if not requests:
            return
        finished, failed = [], []
        for request in requests:
            try:
                if self._push(request, logits[request]):
                    finished.append(request)
            except Exception as e:  # this row's sampler (its constraint) failed: the others go on
                failed.append((request, _message(e, "sampling failed")))
        self.stats.recent.append((time.perf_counter(), len(requests)))
        self._leave(finished, "done")
        for request, message in failed:
            self._leave([request], "failed", message)

    def _forward(self, ids: np.ndarray, cache, logits_to_keep: int = 0):
        outputs = ("logits", "router_logits") if self._router_names else ("logits",)
        out, cache = self.engine.forward(ids, cache, outputs=outputs, logits_to_keep=logits_to_keep)
        if self._router_names:
            self._count_experts(out)
        return out, cache

    def _count_experts(self, out: dict[str, np.ndarray]) -> None:
        cfg = self.engine.config
        counts = expert_counts(engine_routing(out, self._router_names, cfg.top_k), cfg.num_experts)  # [L, E]
        self.stats.expert_tokens = counts if self.stats.expert_tokens is None else self.stats.expert_tokens + counts

    def _push(self, request: Request, logits: np.ndarray) -> bool:
        """Sample the request's next token, hand out its event; True when the request is finished."""
        token = request.sampler(logits)
        k = request.params.logprobs
        logprob = token_logprob(logits, token, k, request.params.logit_bias) if k is not None else None
        event = request.reply.push(token, end=request.sampler.finished, logprob=logprob)  # a constraint may end it
        self.stats.generated_tokens += 1
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        request.next_token = token
        if request.on_event is not None:
            request.on_event(event)
        return request.reply.done

    def _leave(self, requests: list[Request], status: str, error: str | None = None) -> None:
        if not requests:
            return
        gone = {id(r) for r in requests}
        if self._batch is not None:
            for request in requests:
                if status != "failed" and self.prefix_cache is not None and request in self._batch:
                    self._store(request, *self._batch.kv(request))
            self._batch.leave(requests)
            self._running = [r for r in self._running if id(r) not in gone]
            for request in requests:
                self._finish(request, status, error)
            return
        if status != "failed" and self.prefix_cache is not None:  # their prompts and replies, for the next turn
            self._cache = self._cache.editable()  # host arrays once for every row read and the select below
            for b, request in enumerate(self._running):
                if id(request) in gone:
                    self._store_row(request, self._cache, b)
        keep = [b for b, r in enumerate(self._running) if id(r) not in gone]
        self._cache = self._cache.select(keep).trim() if keep else None
        self._running = [self._running[b] for b in keep]
        for request in requests:
            self._finish(request, status, error)

    def _store_row(self, request: Request, cache: KVCache, row: int) -> None:
        """Give the prefix cache the tokens of `row` (the request's prompt and the reply ids fed so far)."""
        if self.prefix_cache is None or cache is None:
            return
        with contextlib.suppress(MixtralTrtError):  # a row the cache cannot take (padding inside it): none stored
            self._store(request, *cache.row_kv(row))

    def _store(self, request: Request, keys: list, values: list) -> None:
        """Give the prefix cache a request's tokens so far (keys / values per cache input [G, L, D])."""
        n = int(keys[0].shape[1])
        self.prefix_cache.store((request.prompt + request.reply.token_ids)[:n], keys, values)

    def _finish(self, request: Request, status: str, error: str | None = None) -> None:
        if request.prefill is not None and self.prefix_cache is not None:
            self.prefix_cache.release(request.prefill.match)
        request.prefill = None
        request.status, request.error = status, error
        request.finished_at = time.perf_counter()
        counter = {"done": "finished", "cancelled": "cancelled", "failed": "failed"}[status]
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        request._done.set()
        if request.on_done is not None:
            request.on_done(request)


def _prefix_cache(engine: Engine, gb: float | None) -> PrefixCache | None:
    """The Scheduler's prefix cache (see Scheduler.__init__)."""
    if gb is None:
        if engine.prefix_cache is not None:
            return engine.prefix_cache
        if unsupported(engine) is not None:
            return None
        return PrefixCache(engine, min(DEFAULT_BUDGET_GB, available_bytes(block_device(engine)) / 4 / GIB))
    if isinstance(gb, int | float) and not isinstance(gb, bool) and gb == 0:
        return None
    return PrefixCache(engine, gb)


def _mean(mean: float | None, x: float, weight: float = 0.25) -> float:
    """An exponential running mean (the first value as it is)."""
    return x if mean is None else mean + weight * (x - mean)


def _message(error: Exception, what: str) -> str:
    """A user error's own one line; anything else named with its type."""
    return str(error) if isinstance(error, MixtralTrtError) else f"{what}: {type(error).__name__}: {error}"
