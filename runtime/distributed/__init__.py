"""Tensor-parallel engines (`export --tensor-parallel N`): one engine per rank, in its own process.

coordinator.py  ShardedRunner: starts the rank processes, sends each call to all of them, keeps them honest
joined.py       JoinedRunner: the same when a launcher (torchrun, mpirun) started them
worker.py       a rank process: process group, its rank engine, its share of the KV cache
rank_ort.py     CPU: the rank graph's pieces in ONNX Runtime, collectives by torch.distributed (gloo)
rank_trt.py     GPU: the rank's TensorRT plan, its DistCollective layers on an NCCL communicator
nccl.py         the NCCL communicator (C API through ctypes)
wire.py         the messages between them (JSON + raw arrays; nothing is unpickled)
"""

from __future__ import annotations

from pathlib import Path

from mixtral_trt.common.manifest import Manifest

from .coordinator import ShardedRunner
from .joined import joined_world_size, open_joined


def open_runner(manifest: Manifest, directory: Path, device: str = "auto"):
    """Join the job this process is a rank of (torchrun, mpirun), or start the rank processes."""
    if joined_world_size() == manifest.backend_info["tensor_parallel"]["world_size"]:
        return open_joined(directory, manifest, device)

    return ShardedRunner(directory, manifest, device)
