"""Iteration-level batching: concurrent requests share engine steps, joining and leaving between steps.

Each step feeds one token per running request as one batch over the KV cache. A request that arrives
while others decode is prefilled alone, and its cache rows join the batch at the next step
(`KVCache.concat`: left padding, per-row positions, attention mask); a request that finishes (or is
cancelled) leaves at once (`KVCache.select`, then `KVCache.trim` drops padding nobody needs any
more). Every request draws from its own Sampler (its own seeded generator, and any constraint the
sampler applies), so its reply equals the same request served alone. Waiting requests are bounded:
beyond `max_queue`, `submit` raises QueueFull.

The scheduler knows nothing of HTTP: a server submits requests from any thread and gets each token
through `on_event`, called on the scheduler's thread. B running requests, V vocab.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError

from .generation import check_prompts
from .kv_cache import KVCache
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
    prefills: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
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


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int | None = None, max_queue: int = 64,
                 expert_load: bool = False) -> None:
        if max_batch is not None and not 1 <= max_batch <= engine.max_batch:
            raise MixtralTrtError(f"max_batch={max_batch}: must be between 1 and the engine's max batch "
                                  f"{engine.max_batch}")
        if max_queue < 0:
            raise MixtralTrtError(f"max_queue={max_queue}: must be >= 0")
        self.engine = engine
        self.max_batch = max_batch or engine.max_batch
        self.max_queue = max_queue
        self.stats = Stats()
        # count every token's experts (prompt and generated) from the engine's router outputs (--debug-outputs)
        self._router_names = engine.contract.names("router_logits") if expert_load else []
        if expert_load and not self._router_names:
            raise MixtralTrtError(f"{engine.path}: no router outputs to count expert load from (export "
                                  "--debug-outputs)")
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []  # row b of the cache is _running[b]
        self._cache: KVCache | None = None
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
        with self._lock:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if self.waiting >= self.max_queue:
                raise QueueFull(f"{self.waiting} requests are already waiting (the queue holds "
                                f"{self.max_queue}): retry later")
            self._waiting.append(request)
            self._lock.notify()
        return request

    @property
    def waiting(self) -> int:
        """Requests waiting for a row (cancelled ones no longer count)."""
        return sum(not r.cancelled for r in list(self._waiting))

    @property
    def alive(self) -> bool:
        """True while the background thread runs steps."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> int:
        return len(self._running)

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
            while self._thread.is_alive() and (self._waiting or self._running):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            with self._lock:
                for request in [*self._waiting, *self._running]:
                    request.cancel()
                self._lock.notify()
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._waiting or self._running or self._stopping):
                    self._lock.wait()
                if self._stopping and not (self._waiting or self._running):
                    return
            self.step()

    def run_until_idle(self) -> None:
        """Run steps on this thread until no request waits or runs (tests, offline batches)."""
        while self._waiting or self._running:
            self.step()

    # ---- one iteration ---------------------------------------------------------------------------------
    def step(self) -> None:
        """Drop cancelled rows, admit waiting requests into free rows, then one decode step for all."""
        try:
            self._leave([r for r in self._running if r.cancelled], "cancelled")
            self._admit()
            if self._running:
                self._decode()
        except Exception as e:  # the engine failed: fail every request in flight, keep serving
            self._leave(list(self._running), "failed", _message(e, "engine step failed"))

    def _admit(self) -> None:
        """Prefill waiting requests into the free rows; their caches join the batch in one concat."""
        joining: list[KVCache] = []
        while len(self._running) < self.max_batch:
            with self._lock:
                if not self._waiting:
                    break
                request = self._waiting.popleft()
            if request.cancelled:
                self._finish(request, "cancelled")
                continue
            try:
                cache = self._prefill(request)
            except Exception as e:
                self._finish(request, "failed", _message(e, "prefill failed"))
                continue
            if cache is not None:
                joining.append(cache)
                self._running.append(request)  # row order: the running batch, then the newcomers in order
        if joining:
            caches = [c for c in (self._cache, *joining) if c is not None]
            self._cache = type(caches[0]).concat(caches)  # KVCache, or another layout with the same methods

    def _prefill(self, request: Request) -> KVCache | None:
        """The prompt alone ([1, T], no padding: exactly its solo prefill) and its first token; the cache
        of its row, or None when that token already ends it."""
        request.status = "running"
        if request.params.max_new_tokens == 0:
            self._finish(request, "done")
            return None
        out, cache = self._forward(np.asarray([request.prompt]), None)
        self.stats.prefills += 1
        self.stats.prompt_tokens += len(request.prompt)
        done = self._push(request, out["logits"][0, -1])
        self.stats.recent.append((time.perf_counter(), 1))
        if done:
            self._finish(request, "done")
            return None
        return cache

    def _decode(self) -> None:
        ids = np.array([[r.next_token] for r in self._running], np.int64)  # [B, 1]
        self.stats.steps += 1
        self.stats.batch_sizes[len(ids)] = self.stats.batch_sizes.get(len(ids), 0) + 1
        out, self._cache = self._forward(ids, self._cache)  # mask and positions from the cache
        logits = out["logits"][:, -1]  # [B, V]
        finished, failed = [], []
        for b, request in enumerate(self._running):
            try:
                if self._push(request, logits[b]):
                    finished.append(request)
            except Exception as e:  # this row's sampler (its constraint) failed: the others go on
                failed.append((request, _message(e, "sampling failed")))
        self.stats.recent.append((time.perf_counter(), len(ids)))
        self._leave(finished, "done")
        for request, message in failed:
            self._leave([request], "failed", message)

    def _forward(self, ids: np.ndarray, cache):
        if not self._router_names:
            return self.engine.forward(ids, cache)
        out, cache = self.engine.forward(ids, cache, outputs=("logits", "router_logits"))
        cfg = self.engine.config
        counts = expert_counts(engine_routing(out, self._router_names, cfg.top_k), cfg.num_experts)  # [L, E]
        self.stats.expert_tokens = counts if self.stats.expert_tokens is None else self.stats.expert_tokens + counts
        return out, cache

    def _push(self, request: Request, logits: np.ndarray) -> bool:
        """Sample the request's next token, hand out its event; True when the request is finished."""
        token = request.sampler(logits)
        event = request.reply.push(token, end=request.sampler.finished)  # a constraint may end the reply
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
        keep = [b for b, r in enumerate(self._running) if id(r) not in gone]
        self._cache = self._cache.select(keep).trim() if keep else None
        self._running = [self._running[b] for b in keep]
        for request in requests:
            self._finish(request, status, error)

    def _finish(self, request: Request, status: str, error: str | None = None) -> None:
        request.status, request.error = status, error
        request.finished_at = time.perf_counter()
        counter = {"done": "finished", "cancelled": "cancelled", "failed": "failed"}[status]
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        request._done.set()
        if request.on_done is not None:
            request.on_done(request)


def _message(error: Exception, what: str) -> str:
    """A user error's own one line; anything else named with its type."""
    return str(error) if isinstance(error, MixtralTrtError) else f"{what}: {type(error).__name__}: {error}"
