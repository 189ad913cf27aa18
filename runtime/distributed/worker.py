"""A rank process of a tensor-parallel engine: `python -m mixtral_trt.runtime.distributed.worker ...`.

Started by the coordinator (coordinator.py), one per rank. It joins the process group (gloo, through the
coordinator's TCP store, with a timeout), opens its rank engine, says it is ready, and then serves
requests from its pipe until told to close or the pipe closes (the coordinator is gone):

    run    feeds (ids, mask, positions; past arrays or a cache id) -> rank 0 answers the requested outputs,
           every rank keeps its present KV cache under the new cache id
    fetch  the arrays of a cache (to assemble the whole cache)
    free   drop caches
    close  exit

Any error is answered as one line and ends the process: after a failed collective the group is unusable.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.dtypes import numpy_dtype
from mixtral_trt.common.tensor_parallel import TensorParallel

from . import wire
from .rank_ort import OrtRankProgram
from .rank_trt import TrtRank

STORE_KEY = "nccl_unique_id"


def store_share(store: Any) -> Callable[[bytes | None], bytes]:
    """Rendezvous through a torch.distributed store: rank 0 sets, every rank gets."""

    def share(data: bytes | None) -> bytes:
        if data is not None:
            store.set(STORE_KEY, data)
        return bytes(store.get(STORE_KEY))

    return share


class RankServer:
    """Rank `rank`'s engine, KV caches and request handling (transport-independent)."""

    def __init__(self, engine_dir: Path, rank: int, world_size: int, backend_info: dict[str, Any], contract,
                 threads: int, share: Callable[[bytes | None], bytes] | None = None) -> None:
        entry = backend_info["tensor_parallel"]["ranks"][rank]
        self.rank, self.contract = rank, contract
        self.tp = TensorParallel.of(contract)
        self.rank_dir = engine_dir / entry["dir"]
        self.caches: dict[int, dict[str, Any]] = {}
        if "program" in entry:
            self.engine = OrtRankProgram(self.rank_dir, entry["program"], world_size, threads)
        else:
            self.engine = TrtRank(self.rank_dir, entry["model_file"], rank, world_size, backend_info, share)

    def _past(self, header: dict[str, Any], arrays: dict[str, np.ndarray], batch: int) -> dict[str, Any]:
        names = self.contract.names("past_key", "inputs") + self.contract.names("past_value", "inputs")
        if header.get("cache_in") is not None:
            cache = self.caches[header["cache_in"]]
            return {n: cache[n.replace("past_key_values.", "present.")] for n in names}
        if names[0] in arrays:  # the rank's kv heads, or all of them (a joined group broadcasts the whole cache)
            mine = self.tp.kv_heads(self.contract.config, self.rank)
            whole = arrays[names[0]].shape[1] == self.contract.config.num_kv_heads != len(mine)
            return {n: np.ascontiguousarray(arrays[n][:, mine]) if whole else arrays[n] for n in names}
        info = next(t for t in self.contract.inputs if t.role == "past_key")  # an empty cache
        shape = [batch if d == "batch" else 0 if d == "past" else d for d in info.shape]

        return {n: np.zeros(shape, numpy_dtype(info.dtype)) for n in names}

    def handle(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict, dict] | None:
        op = header["op"]
        if op == "run":
            feeds = {n: arrays[n] for n in ("input_ids", "attention_mask", "position_ids")}
            feeds.update(self._past(header, arrays, feeds["input_ids"].shape[0]))
            env = self.engine.run(feeds)
            self.caches[header["cache_out"]] = {n: env[n] for n in self.contract.output_names
                                                if n.startswith("present.")}
            wanted = header["outputs"] if self.rank == 0 else []
            return {"ok": True}, {n: self.engine.to_host(env[n]) for n in wanted}
        if op == "fetch":
            cache = self.caches[header["cache"]]
            return {"ok": True}, {n: self.engine.to_host(v) for n, v in cache.items()}
        if op == "free":
            for cid in header["caches"]:
                self.caches.pop(cid, None)
            return None
        raise RuntimeError(f"unknown request {op!r}")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mixtral_trt.runtime.distributed.worker")
    p.add_argument("--engine", type=Path, required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--store-port", type=int, required=True)
    p.add_argument("--fd-in", type=int, required=True)
    p.add_argument("--fd-out", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(args.fd_in, writable=False), Connection(args.fd_out, readable=False)
    try:
        import torch.distributed as dist

        from mixtral_trt.common.manifest import Manifest

        fault = os.environ.get("MIXTRAL_TRT_TP_FAULT", "")  # tests: "rank:call" makes that rank die there
        fault_call = int(fault.split(":")[1]) if fault.split(":")[0] == str(args.rank) else -1
        timeout = datetime.timedelta(seconds=args.timeout)
        store = dist.TCPStore("127.0.0.1", args.store_port, is_master=False, timeout=timeout)
        dist.init_process_group("gloo", store=store, rank=args.rank, world_size=args.world_size, timeout=timeout)
        manifest = Manifest.load(args.engine, verify=False)  # the coordinator verified it
        server = RankServer(args.engine, args.rank, args.world_size, manifest.backend_info, _rank_contract(
            args.engine, manifest, args.rank), args.threads, store_share(store))
        outbox.send_bytes(wire.encode({"ok": True, "pid": os.getpid()}))
    except BaseException as e:  # noqa: BLE001  (reported to the coordinator as one line)
        outbox.send_bytes(wire.encode({"error": _one_line(e)}))
        return 1
    calls = 0
    while True:
        try:
            message = inbox.recv_bytes()
        except (EOFError, OSError):
            return 0  # the coordinator is gone
        header, arrays = wire.decode(message)
        if header["op"] == "close":
            return 0
        if header["op"] == "run":
            calls += 1
            if calls == fault_call:
                os._exit(17)
        try:
            reply = server.handle(header, arrays)
        except BaseException as e:  # noqa: BLE001
            outbox.send_bytes(wire.encode({"error": _one_line(e)}))
            return 1
        if reply is not None:
            outbox.send_bytes(wire.encode(*reply))


def _rank_contract(engine_dir: Path, manifest, rank: int):
    entry = manifest.backend_info["tensor_parallel"]["ranks"][rank]
    return GraphContract.load(engine_dir / entry["dir"])


if __name__ == "__main__":
    sys.exit(main())
