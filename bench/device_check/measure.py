"""Timing on the device: CUDA events around repeated calls (or around a CUDA graph replay), median of the
repeats; the host clock on CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def seconds(fn: Callable[[], object], device: str, repeats: int = 10, warmup: int = 2) -> float:
    """Median seconds of one call of `fn` on `device` ("cuda" or "cpu")."""
    import torch

    for _ in range(warmup):
        fn()
    if device != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for begin, end in events:
        begin.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(b.elapsed_time(e) for b, e in events) / 1e3


def graphed(fn: Callable[[], object]) -> Callable[[], object] | None:
    """`fn` captured in a CUDA graph (its replay), or None when the capture fails (the chain then runs eagerly)."""
    import torch

    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm up outside the capture (Triton compiles and caches here)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        torch.cuda.synchronize()
    except Exception:  # some chains cannot be captured: measured eagerly instead
        torch.cuda.synchronize()
        return None
    return graph.replay
