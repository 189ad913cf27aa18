"""`ShardedRunner`: a tensor-parallel engine behind the ordinary Runner interface.

`runtime.load` on an engine built from `export --tensor-parallel N` starts N rank processes
(`python -m mixtral_trt.runtime.distributed.worker`), one per rank engine, and hosts the TCP store they
meet at (torch.distributed, gloo for the CPU collectives; on GPUs the same store carries the NCCL unique
id). Each call sends the inputs to every rank over its pipe; all ranks run their engine together (the
collectives join them), rank 0 answers the outputs, and every rank keeps its share of the KV cache. The
cache comes back as `RemoteKV` handles that the next call passes in; a handle's cache is freed in the
ranks when the last handle is dropped.

Nothing may hang: the process group has a timeout (`MIXTRAL_TRT_TP_TIMEOUT` seconds, default 60), the
coordinator watches every rank process while it waits, and a rank that dies, errs or stays silent makes the
call fail with one line naming it; the other ranks are then stopped and the engine refuses further calls.
B batch, G kv heads, S cached + new tokens, D head_dim.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.dtypes import numpy_dtype
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest
from mixtral_trt.common.tensor_parallel import TensorParallel

from . import wire

DEFAULT_TIMEOUT = 60.0
START_TIMEOUT = 300.0  # opening the rank engines (a TensorRT plan of tens of GB takes a while)


class RemoteCache:
    """One KV cache held by the rank processes under `id`; freed there when this object goes away."""

    def __init__(self, runner: ShardedRunner, cache_id: int) -> None:
        self.runner, self.id = runner, cache_id
        weakref.finalize(self, ShardedRunner.release, weakref.ref(runner), cache_id)


class RemoteKV:
    """A present/past tensor of a tensor-parallel engine: its whole-model shape; the data stays in the ranks."""

    def __init__(self, cache: RemoteCache, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.cache, self.name, self.shape, self.dtype = cache, name, shape, dtype

    def numpy(self) -> np.ndarray:
        """The whole tensor [B, G, S, D], assembled from the ranks' kv heads."""
        return self.cache.runner.gather(self.cache.id)[self.name]

    def __repr__(self) -> str:
        return f"RemoteKV({self.name}, shape={self.shape}, cache={self.cache.id})"


def _tail(path: Path) -> str:
    """The last non-empty line a rank process wrote to stderr."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _shutdown(procs: list[subprocess.Popen], pipes: list[tuple[Connection, Connection]], logs: str) -> None:
    for send, _ in pipes:
        with contextlib.suppress(OSError):
            send.send_bytes(wire.encode({"op": "close"}))
    deadline = time.monotonic() + 3
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for send, recv in pipes:
        send.close()
        recv.close()
    shutil.rmtree(logs, ignore_errors=True)


class ShardedRunner:
    def __init__(self, directory: Path, manifest: Manifest, device: str = "auto") -> None:
        import torch.distributed as dist

        self.directory, self.manifest = directory, manifest
        self.contract = manifest.contract
        self.tp = TensorParallel.of(self.contract)
        info = manifest.backend_info["tensor_parallel"]
        self.world_size = int(info["world_size"])
        tensorrt = "program" not in info["ranks"][0]
        if not tensorrt and device == "cuda":
            raise MixtralTrtError(f"{directory}: a tensor-parallel ONNX Runtime engine runs on CPU (collectives by "
                                  "gloo); build it with --backend trt for GPUs")
        self.device = "cuda" if tensorrt else "cpu"
        self.timeout = float(os.environ.get("MIXTRAL_TRT_TP_TIMEOUT", DEFAULT_TIMEOUT))
        self.broken: str | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._released: list[int] = []
        import datetime

        self._store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                                    timeout=datetime.timedelta(seconds=self.timeout))
        threads = int(os.environ.get("MIXTRAL_TRT_THREADS", "0")) or max(1, (os.cpu_count() or 1) // self.world_size)
        self._logs = tempfile.mkdtemp(prefix="mixtral-trt-ranks-")
        self._procs: list[subprocess.Popen] = []
        self._pipes: list[tuple[Connection, Connection]] = []
        for rank in range(self.world_size):
            to_rank, from_rank = os.pipe(), os.pipe()
            cmd = [sys.executable, "-m", "mixtral_trt.runtime.distributed.worker", "--engine", str(directory),
                   "--rank", str(rank), "--world-size", str(self.world_size), "--store-port", str(self._store.port),
                   "--fd-in", str(to_rank[0]), "--fd-out", str(from_rank[1]), "--timeout", str(self.timeout),
                   "--threads", str(threads)]
            with open(Path(self._logs) / f"rank{rank}.log", "wb") as log:
                self._procs.append(subprocess.Popen(cmd, pass_fds=(to_rank[0], from_rank[1]), stdin=subprocess.DEVNULL,
                                                    stdout=log, stderr=log))
            os.close(to_rank[0])
            os.close(from_rank[1])
            self._pipes.append((Connection(to_rank[1], readable=False), Connection(from_rank[0], writable=False)))
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._pipes, self._logs)
        self.pids = [p.pid for p in self._procs]
        self._await(range(self.world_size), max(START_TIMEOUT, self.timeout), "start-up")

    # ---- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the rank processes (also done when the runner is garbage-collected or at exit)."""
        self._finalizer()

    @staticmethod
    def release(runner_ref: weakref.ref, cache_id: int) -> None:
        runner = runner_ref()
        if runner is not None:
            runner._released.append(cache_id)  # sent with the next request (never from a finalizer)

    def _fail(self, message: str) -> MixtralTrtError:
        self.broken = f"tensor-parallel engine {self.directory}: {message}"
        self._finalizer()
        return MixtralTrtError(self.broken)

    def _await(self, ranks, seconds: float, what: str) -> dict[int, tuple[dict, dict]]:
        """Each rank's reply, watching the processes: one line naming the rank on death, error or timeout."""
        pending = {self._pipes[r][1]: r for r in ranks}
        replies: dict[int, tuple[dict, dict]] = {}
        deadline = time.monotonic() + seconds
        while pending:
            for conn in wait(list(pending), timeout=0.1):
                rank = pending.pop(conn)
                try:
                    header, arrays = wire.decode(conn.recv_bytes())
                except (EOFError, OSError):
                    raise self._fail(self._blame({}, what)) from None
                if "error" in header:
                    silent = sorted(r for r in pending.values() if self._procs[r].poll() is None)
                    raise self._fail(self._blame({rank: header["error"]}, what, silent))
                replies[rank] = (header, arrays)
            if any(proc.poll() is not None for proc in self._procs):
                raise self._fail(self._blame({}, what))
            if time.monotonic() > deadline:
                raise self._fail(f"rank {pending[next(iter(pending))]} did not answer within {seconds:.0f} s during "
                                 f"{what} (MIXTRAL_TRT_TP_TIMEOUT)")
        return replies

    def _blame(self, reported: dict[int, str], what: str, silent: list[int] | None = None) -> str:
        """The one line. A rank that exited without reporting is the root cause (its peers' collectives then
        fail); otherwise the reporting rank's own error."""
        time.sleep(0.3)  # let a dying peer's exit be seen
        dead = [(rank, proc, proc.poll()) for rank, proc in enumerate(self._procs)
                if proc.poll() is not None and rank not in reported]
        # A rank whose collective broke because a peer died aborts (SIGABRT) after it: the others come first.
        dead.sort(key=lambda d: (d[2] == -signal.SIGABRT, d[0]))
        if dead:
            rank, proc, code = dead[0]
            tail = _tail(Path(self._logs) / f"rank{rank}.log")
            also = "".join(f"; rank {r} (pid {p.pid}) exited with code {c}" for r, p, c in dead[1:])
            return f"rank {rank} (pid {proc.pid}) exited with code {code} during {what}" + \
                (f": {tail}" if tail else "") + also
        rank, error = next(iter(reported.items()))
        quiet = f" (rank {', '.join(map(str, silent))} did not answer)" if silent else ""
        return f"rank {rank} failed during {what}{quiet}: {error}"

    # ---- calls ----------------------------------------------------------------------------------------
    def _send(self, rank: int, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        try:
            self._pipes[rank][0].send_bytes(wire.encode(header, arrays))
        except OSError:
            raise self._fail(self._blame({}, header["op"])) from None

    def _flush_released(self) -> None:
        if self._released:
            released, self._released = self._released, []
            for rank in range(self.world_size):
                self._send(rank, {"op": "free", "caches": released})

    def _past_per_rank(self, past: dict[str, Any]) -> tuple[int | None, list[dict[str, np.ndarray]]]:
        """(cache id, per-rank past arrays): handles of one cache, or arrays cut to each rank's kv heads."""
        values = list(past.values())
        if all(isinstance(v, RemoteKV) for v in values):
            ids = {v.cache.id for v in values}
            if len(ids) != 1 or next(iter(values)).cache.runner is not self:
                raise MixtralTrtError("past_key_values: handles of different caches (or another engine's)")
            return ids.pop(), [{} for _ in range(self.world_size)]
        arrays = {n: np.asarray(v) for n, v in past.items()}
        if next(iter(arrays.values())).shape[2] == 0:
            return None, [{} for _ in range(self.world_size)]  # empty: each rank makes its own
        cfg = self.contract.config
        return None, [{n: np.ascontiguousarray(a[:, self.tp.kv_heads(cfg, r)]) for n, a in arrays.items()}
                      for r in range(self.world_size)]

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> dict[str, Any]:
        with self._lock:
            if self.broken:
                raise MixtralTrtError(self.broken)
            self._flush_released()
            past_names = self.contract.names("past_key", "inputs") + self.contract.names("past_value", "inputs")
            cache_in, per_rank = self._past_per_rank({n: feeds[n] for n in past_names})
            ids = np.asarray(feeds["input_ids"], np.int64)
            common = {"input_ids": ids, "attention_mask": np.asarray(feeds["attention_mask"], np.int64),
                      "position_ids": np.asarray(feeds["position_ids"], np.int64)}
            cache = RemoteCache(self, next(self._ids))
            header = {"op": "run", "cache_in": cache_in, "cache_out": cache.id,
                      "outputs": [n for n in output_names if not n.startswith("present.")]}
            for rank in range(self.world_size):
                self._send(rank, header, {**common, **per_rank[rank]})
            replies = self._await(range(self.world_size), self.timeout + 10, "a call")
        out: dict[str, Any] = dict(replies[0][1])
        cfg = self.contract.config
        b, t = ids.shape
        past_len = feeds[past_names[0]].shape[2]
        kv_dtype = numpy_dtype(self.contract.inputs[-1].dtype)
        for name in output_names:
            if name.startswith("present."):
                out[name] = RemoteKV(cache, name, (b, cfg.num_kv_heads, past_len + t, cfg.head_dim), kv_dtype)
        return out

    def gather(self, cache_id: int) -> dict[str, np.ndarray]:
        """Every present tensor of a cache, whole: each kv head taken from the first rank holding it."""
        with self._lock:
            if self.broken:
                raise MixtralTrtError(self.broken)
            for rank in range(self.world_size):
                self._send(rank, {"op": "fetch", "cache": cache_id})
            replies = self._await(range(self.world_size), self.timeout, "fetching a cache")
        cfg = self.contract.config
        owners = [self.tp.kv_owner(cfg, g) for g in range(cfg.num_kv_heads)]
        return {name: np.stack([replies[r][1][name][:, i] for r, i in owners], axis=1)
                for name in replies[0][1]}
