"""Prometheus metrics of one server, in its own registry (several apps in one process never collide).

From the HTTP side: requests by endpoint, error responses by status, time to first token and request
latency histograms. From the scheduler, read at each scrape: waiting and running requests, prompt and
generated tokens, generated tokens/s over the last `WINDOW` seconds, engine steps by batch size; with
`serve --expert-load`, tokens routed to each expert of each layer (prompt and generated tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mixtral_trt.runtime.scheduler import Request, Scheduler

WINDOW = 10.0  # seconds behind the tokens/s gauge
PREFIX = "mixtral_trt_"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _SchedulerCollector:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.scheduler
        yield GaugeMetricFamily(PREFIX + "queue_length", "Requests waiting for a batch row", value=s.waiting)
        yield GaugeMetricFamily(PREFIX + "running_requests", "Requests in the running batch", value=s.running)
        yield GaugeMetricFamily(PREFIX + "generation_tokens_per_second",
                                f"Tokens generated per second over the last {WINDOW:g} s",
                                value=s.stats.tokens_per_second(WINDOW))
        yield CounterMetricFamily(PREFIX + "prompt_tokens", "Prompt tokens prefilled", value=s.stats.prompt_tokens)
        yield CounterMetricFamily(PREFIX + "generation_tokens", "Tokens generated", value=s.stats.generated_tokens)
        steps = CounterMetricFamily(PREFIX + "engine_steps", "Batched decode steps, by rows", labels=["rows"])
        for rows, count in sorted(dict(s.stats.batch_sizes).items()):
            steps.add_metric([str(rows)], count)
        yield steps
        load = s.stats.expert_tokens  # [L, E], or None when not counted
        if load is not None:
            experts = CounterMetricFamily(PREFIX + "expert_tokens", "Tokens routed to each expert, by layer",
                                          labels=["layer", "expert"])
            for (layer, expert), count in np.ndenumerate(load):
                experts.add_metric([str(layer), str(expert)], int(count))
            yield experts


class Metrics:
    def __init__(self, scheduler: Scheduler) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry()
        r.register(_SchedulerCollector(scheduler))
        self.requests = Counter(PREFIX + "requests", "Requests accepted, by endpoint", ["endpoint"], registry=r)
        self.finished = Counter(PREFIX + "requests_finished", "Requests over, by outcome", ["status"], registry=r)
        self.errors = Counter(PREFIX + "errors", "Error responses, by HTTP status", ["status"], registry=r)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Submission to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram(PREFIX + "request_latency_seconds", "Submission to last token",
                                 buckets=LATENCY_BUCKETS, registry=r)

    def observe(self, request: Request) -> None:
        """A request is over (called on the scheduler's thread; prometheus_client is thread-safe)."""
        self.finished.labels(request.status).inc()
        if request.first_token_at is not None:
            self.ttft.observe(request.first_token_at - request.submitted)
        if request.finished_at is not None and request.status == "done":
            self.latency.observe(request.finished_at - request.submitted)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    @property
    def content_type(self) -> str:
        from prometheus_client import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST
