"""`run_serve_bench`: N concurrent clients against `mixtral-export serve` on a preset's random checkpoint.

The server runs in a subprocess (its own interpreter and ONNX Runtime threads); the clients are threads
of this process speaking plain HTTP/1.1 (stdlib `http.client`), each sending streamed chat requests one
after another (a closed loop: `rounds` requests per client). Per N: generated tokens/s over the run's
wall time, and percentiles of request latency, time to first token and the gap between streamed tokens.
Runs are interleaved over N and repeated; the best run of each N is reported (this machine is shared,
so the slowest runs mostly measure other people's jobs). The engine alone (`Engine.forward` at batch N,
no server) is measured too: the ceiling batching can reach.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import step
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref.presets import get_preset

from .run import BenchSettings, _checkpoint

if TYPE_CHECKING:
    from rich.progress import Progress

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards",
         "quietly", "hex", "every", "jovial", "blue", "dragon", "near", "old", "stone", "bridges", "under", "grey")


@dataclass(frozen=True)
class ServeBenchSettings:
    preset: str = "small"
    clients: tuple[int, ...] = (1, 4, 8, 16)
    rounds: int = 3  # requests per client, one after another
    max_tokens: int = 64  # per request (ignore_eos: every request generates exactly this many)
    temperature: float = 1.0  # sampled, seeded per request (OpenAI's default temperature)
    repeats: int = 2  # interleaved runs per N; the best is reported
    max_seq: int = 512
    workdir: Path = Path("bench-out")
    threads: int | None = None  # ONNX Runtime threads of the server (default: all cores)
    quantize: str | None = None  # weight-only scheme of the served engine (int8, int4; default fp32)
    seed: int = 0
    multi_turn: int = 0  # tokens of the first turn of serve_multiturn.py's scenario (the CLI runs it); 0: none

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.quantize is not None:
            QuantScheme.parse(self.quantize)
        if not self.clients or min(self.clients) < 1:
            raise MixtralTrtError(f"--clients {','.join(map(str, self.clients))}: give client counts >= 1")
        if self.multi_turn < 0 or (self.multi_turn and self.max_seq < self.multi_turn + 64):
            raise MixtralTrtError(f"--multi-turn {self.multi_turn}: must be >= 0 (tokens of the first turn) and leave "
                                  f"64 tokens of --max-seq ({self.max_seq}) for its reply and the second question")
        for name in ("rounds", "max_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise MixtralTrtError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")


def serve_onnx_dir(s: ServeBenchSettings, progress: Progress | None = None) -> Path:
    """The preset's export (fp32, or quantized) with max batch = the most clients, made once under workdir."""
    ckpt = _checkpoint(BenchSettings(preset=s.preset, workdir=s.workdir, seed=s.seed, backends=("ort",)), progress)
    onnx_dir = s.workdir / f"{_serve_tag(s)}-onnx"
    if not onnx_dir.exists():
        export_checkpoint(ckpt, onnx_dir, dtype="fp32", max_seq=s.max_seq, max_batch=max(s.clients),
                          quantize_experts=s.quantize, progress=progress)
    return onnx_dir


def _serve_tag(s: ServeBenchSettings) -> str:
    return f"{s.preset}-seed{s.seed}-serve-b{max(s.clients)}-s{s.max_seq}" + (f"-{s.quantize}" if s.quantize else "")


def serve_engine_dir(s: ServeBenchSettings, progress: Progress | None = None, ragged: bool = False) -> Path:
    """The preset's ORT engine built once under workdir from serve_onnx_dir's export (its name holds the expert form
    the build chooses: lowering/ort.py); `ragged`: the same export built --ragged (with our CPU kernels built, its
    attention is the RaggedAttention op: exporter/lowering/ragged_attention.py)."""
    from mixtral_trt.exporter.lowering.ort import expert_form

    onnx_dir = serve_onnx_dir(s, progress)
    engine_dir = s.workdir / f"{_serve_tag(s)}-engine-ort-{expert_form(GraphContract.load(onnx_dir), 'cpu')}"
    engine_dir = engine_dir.with_name(engine_dir.name + "-ragged") if ragged else engine_dir
    if not engine_dir.exists():
        build_engine(onnx_dir, engine_dir, "ort", progress=progress, ragged=ragged)
    return engine_dir


def engine_scaling(engine_dir: Path, batches: tuple[int, ...], prompt: int = 32, steps: int = 32) -> dict[str, float]:
    """Greedy decode tokens/s of the engine alone at each batch size (best of 2): the ceiling."""
    engine = runtime.load(engine_dir, verify=False)
    out: dict[str, float] = {}
    for b in batches:
        ids = np.random.default_rng(b).integers(3, engine.config.vocab_size, (b, prompt))
        best = float("inf")
        for _ in range(2):
            logits, cache = engine.forward(ids)
            token = logits["logits"][:, -1].argmax(-1)[:, None]  # [B, 1]
            start = time.perf_counter()
            for _ in range(steps):
                logits, cache = engine.forward(token, cache)
                token = logits["logits"][:, -1].argmax(-1)[:, None]
            best = min(best, time.perf_counter() - start)
        out[str(b)] = b * steps / best
    return out


class ServerProcess:
    """`serve(engine_dir)` in a subprocess on a free port of 127.0.0.1; stopped with SIGINT (graceful)."""

    def __init__(self, engine_dir: Path, max_batch: int, threads: int | None, **options: Any) -> None:
        """`options`: more keyword arguments of `serve` (prefix_cache_gb, prefill_chunk), as Python literals."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        more = "".join(f", {name}={value!r}" for name, value in options.items())
        code = ("from mixtral_trt.serve.server import serve\n"
                f"serve({str(engine_dir)!r}, port={self.port}, max_batch={max_batch}, max_queue=1024, "
                f"log_level='warning'{more})\n")
        env = {**os.environ, **({"MIXTRAL_TRT_THREADS": str(threads)} if threads else {})}
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env)

    def __enter__(self) -> ServerProcess:
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode} while starting")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 300 s")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def chat_request(port: int, n: int, s: ServeBenchSettings, max_tokens: int | None = None,
                 messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One streamed chat completion (of `messages`, else a short question of its own); its token count (from
    usage), latency, TTFT, token gaps and text."""
    words = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(12 + n % 13))
    body = {"model": "bench", "messages": messages or [{"role": "user", "content": words}], "stream": True,
            "max_tokens": max_tokens or s.max_tokens, "temperature": s.temperature, "seed": n, "ignore_eos": True}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"request {n}: HTTP {response.status}: {response.read()[:300]!r}")
    arrivals, tokens, text = [], 0, []
    while line := response.readline():
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        chunk = json.loads(line[6:])
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            arrivals.append(time.perf_counter())
            text.append(chunk["choices"][0]["delta"]["content"])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    conn.close()
    return {"tokens": tokens, "latency": end - start, "ttft": (arrivals[0] if arrivals else end) - start,
            "gaps": np.diff(arrivals).tolist(), "text": "".join(text)}


def load_run(port: int, clients: int, s: ServeBenchSettings, first_id: int) -> dict[str, Any]:
    """`clients` threads, `rounds` requests each, started together."""
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)

    def client(c: int) -> None:
        barrier.wait()
        try:
            for r in range(s.rounds):
                got = chat_request(port, first_id + c * s.rounds + r, s)
                with lock:
                    results.append(got)
        except BaseException as e:  # reported after the run
            errors.append(e)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]

    def pct(values: list[float]) -> dict[str, float]:
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} if values else {}

    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "seconds": wall,
            "tokens_per_s": tokens / wall, "latency_s": pct([r["latency"] for r in results]),
            "ttft_s": pct([r["ttft"] for r in results]), "token_gap_s": pct([g for r in results for g in r["gaps"]]),
            "load_average": os.getloadavg()[0]}


def run_serve_bench(s: ServeBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    engine_dir = serve_engine_dir(s, progress)
    if s.threads:
        os.environ["MIXTRAL_TRT_THREADS"] = str(s.threads)
    with step(progress, "engine alone: decode tokens/s by batch"):
        ceiling = engine_scaling(engine_dir, s.clients)
    runs: dict[str, list[dict[str, Any]]] = {str(n): [] for n in s.clients}
    with ServerProcess(engine_dir, max(s.clients), s.threads) as server:
        with step(progress, "warm-up request"):
            chat_request(server.port, 10**6, s, max_tokens=8)
        first_id = 0
        for rep in range(s.repeats):
            for n in s.clients:
                with step(progress, f"run {rep + 1}/{s.repeats}: {n} client{'s' * (n > 1)}"):
                    runs[str(n)].append(load_run(server.port, n, s, first_id))
                first_id += n * s.rounds
    best = {n: max(rs, key=lambda r: r["tokens_per_s"]) for n, rs in runs.items()}
    base = best[str(min(s.clients))]["tokens_per_s"]
    result = {
        "preset": s.preset,
        "settings": {**asdict(s), "workdir": str(s.workdir), "threads": s.threads or os.cpu_count()},
        "engine_dir": str(engine_dir),
        "best": best,
        "speedup": {n: r["tokens_per_s"] / base for n, r in best.items()},
        "engine_alone_tokens_per_s": ceiling,
        "engine_alone_speedup": {n: v / ceiling[str(min(s.clients))] for n, v in ceiling.items()},
        "runs": runs,
    }
    if "8" in best and "1" in best:
        result["targets"] = {"clients_8_over_1": result["speedup"]["8"],
                             "clients_8_at_least_3x_1": result["speedup"]["8"] >= 3.0}
    return result
