"""Read bandwidth measured the way a weight-streaming GEMV reads, by several methods, repeated.

Decode at batch 1 streams every active weight from memory once per token; its ceiling is the rate at
which the cores can read a buffer far larger than the last-level cache. No single method gives that
rate reliably on a shared 2-core machine (one run measured 53 GB/s, the next 31), so several are run,
each `repeats` times, interleaved (noise hits all of them alike), and the spread is kept:

- `numpy_1t`:   one thread reduces the whole buffer (numpy's sum): what one core reads.
- `pinned_sum`: one thread per core, each pinned to its core (os.sched_setaffinity), reducing its own
                slice; numpy releases the GIL, so the threads read in parallel.
- `ort_gemv`:   ONNX Runtime MatMul [1, K] x [K, N] over an fp32 weight larger than the caches, with the
                benchmark's intra-op threads: exactly decode's access pattern, through decode's library.

Noise only ever slows a read, so the bandwidth is the best repeat of the best method; the JSON keeps
min / median / best per method and how many cores other processes used meanwhile.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .noise import Window

METHODS = ("numpy_1t", "pinned_sum", "ort_gemv")


@dataclass(frozen=True)
class MethodFigures:
    best_gbs: float
    median_gbs: float
    min_gbs: float
    samples_gbs: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[float]) -> MethodFigures:
        return cls(max(samples), statistics.median(samples), min(samples), tuple(samples))


@dataclass(frozen=True)
class Bandwidth:
    """The measured read bandwidth: `gbs` (best repeat of the best method) and every method's spread."""

    gbs: float
    method: str
    methods: dict[str, MethodFigures]
    buffer_bytes: int
    threads: int
    other_cores: float | None  # cores' worth of other processes during the measurement

    def to_json(self) -> dict:
        return {**asdict(self), "methods": {k: asdict(v) for k, v in self.methods.items()}}


def _timed(fn: Callable[[], object], nbytes: int) -> float:
    start = time.perf_counter()
    fn()
    return nbytes / (time.perf_counter() - start) / 1e9


class _PinnedReaders:
    """`threads` long-lived threads, thread i pinned to the i-th allowed CPU, each summing its slice."""

    def __init__(self, buf: np.ndarray, threads: int) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.parts = np.array_split(buf, threads)
        self.go, self.done = threading.Barrier(threads + 1), threading.Barrier(threads + 1)
        self.stop = False
        self.workers = [threading.Thread(target=self._work, args=(i, cpus), daemon=True) for i in range(threads)]
        for w in self.workers:
            w.start()

    def _work(self, i: int, cpus: list[int]) -> None:
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpus[i % len(cpus)]})  # 0 = the calling thread on Linux
        while True:
            self.go.wait()
            if self.stop:
                return
            self.parts[i].sum()
            self.done.wait()

    def read(self) -> None:
        self.go.wait()
        self.done.wait()

    def close(self) -> None:
        self.stop = True
        self.go.wait()
        for w in self.workers:
            w.join()


def _ort_gemv(nbytes: int, threads: int) -> tuple[Callable[[], object], int]:
    """A one-node ONNX Runtime session y = x @ W with W [K, N] fp32 of about `nbytes`."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 4096
    n = max(256, nbytes // (4 * k))
    w = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.ones((1, k), np.float32)
    return (lambda: session.run(None, {"x": x})), w.nbytes


def measure_bandwidth(threads: int, buffer_mib: int = 512, repeats: int = 7,
                      methods: tuple[str, ...] = METHODS) -> Bandwidth:
    """Every method `repeats` times, interleaved; figures in GB/s (1e9 bytes)."""
    buf = np.ones((buffer_mib << 20) // 4, np.float32)  # written once: every page is resident
    readers: dict[str, Callable[[], object]] = {}
    sizes: dict[str, int] = {}
    pinned = None
    if "numpy_1t" in methods:
        readers["numpy_1t"], sizes["numpy_1t"] = buf.sum, buf.nbytes
    if "pinned_sum" in methods:
        pinned = _PinnedReaders(buf, threads)
        readers["pinned_sum"], sizes["pinned_sum"] = pinned.read, buf.nbytes
    if "ort_gemv" in methods:
        readers["ort_gemv"], sizes["ort_gemv"] = _ort_gemv(buffer_mib << 20, threads)
    samples: dict[str, list[float]] = {m: [] for m in readers}
    try:
        for fn in readers.values():
            fn()  # warm-up: first-touch, thread start, ORT prepacking
        with Window() as window:
            for _ in range(repeats):
                for name, fn in readers.items():
                    samples[name].append(_timed(fn, sizes[name]))
    finally:
        if pinned is not None:
            pinned.close()
    figures = {m: MethodFigures.of(s) for m, s in samples.items()}
    best = max(figures, key=lambda m: figures[m].best_gbs)
    return Bandwidth(figures[best].best_gbs, best, figures, buf.nbytes, threads, window.other_cores)


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache of this machine (sysfs), or None."""
    sizes = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        return None
    return max(sizes) if sizes else None
