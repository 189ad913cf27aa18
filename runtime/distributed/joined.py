"""Joining rank processes someone else started (torchrun, or mpirun / srun exporting the same variables).

Every process of the job calls `runtime.load(engine)`. With RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT
set and WORLD_SIZE equal to the engine's ranks, rank r opens rank r's engine in its own process; rank 0
gets the `Engine`, and `load` on every other rank serves rank 0 until it closes the engine (or exits), then
ends the process (SystemExit 0): in a joined job only rank 0 runs the caller's code past `load`.

Requests go from rank 0 to the others by broadcast on a gloo group whose timeout is long (a rank may wait
for the user); the compute collectives use the default group with MIXTRAL_TRT_TP_TIMEOUT, so a dead or hung
rank still fails rank 0's call in one line. Multi-node jobs work the same way (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import datetime
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest
from mixtral_trt.common.tensor_parallel import TensorParallel

from . import wire
from .coordinator import DEFAULT_TIMEOUT, CacheHolder, RemoteCache, RemoteKV
from .worker import RankServer

JOB_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
CONTROL_TIMEOUT = datetime.timedelta(days=365)


def joined_world_size() -> int | None:
    """WORLD_SIZE when this process is one rank of a launched job, else None."""
    if all(v in os.environ for v in JOB_VARIABLES):
        return int(os.environ["WORLD_SIZE"])
    return None


def _broadcast(group: Any, data: bytes | None, src: int) -> bytes:
    import torch
    import torch.distributed as dist

    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    dist.broadcast(size, src, group=group)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data is not None else \
        torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(buf, src, group=group)
    return buf.numpy().tobytes()


def _leave(group: Any) -> None:
    """Every rank, at the end: meet, then tear the process groups down together. A rank that exits while a
    peer's gloo connection is still open makes that peer abort (SIGABRT) when the socket closes under it."""
    import torch.distributed as dist

    dist.barrier(group=group)
    dist.destroy_process_group()


def _close(group: Any) -> None:
    """Rank 0 closing the engine: tell the other ranks, then leave with them."""
    _broadcast(group, wire.encode({"op": "close"}), 0)
    _leave(group)


class JoinedRunner(CacheHolder):
    def __init__(self, directory: Path, manifest: Manifest, device: str = "auto") -> None:
        import torch.distributed as dist

        info = manifest.backend_info["tensor_parallel"]
        self.world_size, self.contract = int(info["world_size"]), manifest.contract
        self.tp, self.directory = TensorParallel.of(self.contract), directory
        timeout = datetime.timedelta(seconds=float(os.environ.get("MIXTRAL_TRT_TP_TIMEOUT", DEFAULT_TIMEOUT)))
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timeout)
        if dist.get_world_size() != self.world_size:
            raise MixtralTrtError(f"{directory}: an engine of {self.world_size} ranks, in a job of "
                                  f"{dist.get_world_size()} processes")
        self.rank = dist.get_rank()
        self.control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        tensorrt = "program" not in info["ranks"][0]
        self.device = "cuda" if tensorrt else "cpu"
        entry = info["ranks"][self.rank]
        threads = int(os.environ.get("MIXTRAL_TRT_THREADS", "0")) or max(
            1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size)))
        self.server = RankServer(directory, self.rank, self.world_size, manifest.backend_info,
                                 GraphContract.load(directory / entry["dir"]), threads,
                                 lambda data: _broadcast(self.control, data, 0))
        self._ids = iter(range(1, 1 << 62))
        self._released: list[int] = []
        self.broken: str | None = None
        if self.rank == 0:
            self._finalizer = weakref.finalize(self, _close, self.control)

    # ---- ranks other than 0 -------------------------------------------------------------------------
    def serve(self) -> None:
        """Handle rank 0's requests until it closes the engine."""
        while True:
            header, arrays = wire.decode(_broadcast(self.control, None, 0))
            if header["op"] == "close":
                return
            reply = self.server.handle(header, arrays)
            if header["op"] == "fetch":
                self._exchange(reply[1] if reply else {})

    def _exchange(self, mine: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [wire.decode(_broadcast(self.control, wire.encode({}, mine) if r == self.rank else None, r))[1]
                for r in range(self.world_size)]

    # ---- rank 0: the Runner interface ------------------------------------------------------------------
    def _request(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None):
        if self.broken:
            raise MixtralTrtError(self.broken)
        message = wire.encode(header, arrays)
        try:
            _broadcast(self.control, message, 0)
            return self.server.handle(*wire.decode(message))
        except MixtralTrtError:
            raise
        except Exception as e:  # a failed collective: a rank died or hung
            self.broken = f"tensor-parallel engine {self.directory}: rank 0 failed: {' '.join(str(e).split())[:300]}"
            raise MixtralTrtError(self.broken) from None

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> dict[str, Any]:
        if self._released:
            released, self._released = self._released, []
            self._request({"op": "free", "caches": released})
        past_names = self.contract.names("past_key", "inputs") + self.contract.names("past_value", "inputs")
        past = {n: feeds[n] for n in past_names}
        cache = RemoteCache(self, next(self._ids))
        header = {"op": "run", "cache_out": cache.id, "cache_in": None,
                  "outputs": [n for n in output_names if not n.startswith("present.")]}
        arrays = {n: np.asarray(feeds[n], np.int64) for n in ("input_ids", "attention_mask", "position_ids")}
        first = next(iter(past.values()))
        if isinstance(first, RemoteKV):
            header["cache_in"] = first.cache.id
        elif first.shape[2]:
            arrays.update({n: np.asarray(v) for n, v in past.items()})
        _, out = self._request(header, arrays)
        cfg = self.contract.config
        b, t = arrays["input_ids"].shape
        for name in output_names:
            if name.startswith("present."):
                out[name] = RemoteKV(cache, name, (b, cfg.num_kv_heads, first.shape[2] + t, cfg.head_dim),
                                     np.dtype(first.dtype))
        return out

    def gather(self, cache_id: int) -> dict[str, np.ndarray]:
        _, mine = self._request({"op": "fetch", "cache": cache_id})
        parts = self._exchange(mine)
        cfg = self.contract.config
        owners = [self.tp.kv_owner(cfg, g) for g in range(cfg.num_kv_heads)]
        return {name: np.stack([parts[r][name][:, i] for r, i in owners], axis=1) for name in parts[0]}


def open_joined(directory: Path, manifest: Manifest, device: str = "auto") -> JoinedRunner:
    runner = JoinedRunner(directory, manifest, device)
    if runner.rank != 0:
        runner.serve()
        _leave(runner.control)
        raise SystemExit(0)
    return runner
