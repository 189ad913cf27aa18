"""One rank of a tensor-parallel TensorRT engine: the rank's plan on its GPU, its DistCollective layers on
an NCCL communicator (written against TensorRT's documented multi-device API; needs >= 2 GPUs, SM80+,
TensorRT >= 10.16 and NCCL, none of which this CPU-only project's CI has: covered by `gpu` tests).

All ranks enqueue each call together (the coordinator sends it to every rank at once), as TensorRT
requires: an NCCL collective blocks until every rank has joined. The KV cache stays on this GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest

from ..backends.trt import TrtRunner
from .nccl import Communicator, unique_id


class TrtRank:
    def __init__(self, rank_dir: Path, plan_file: str, rank: int, world_size: int, backend_info: dict[str, Any],
                 share: Callable[[bytes | None], bytes]) -> None:
        """`share(data)`: rank 0 passes the NCCL unique id and every rank gets it back (the rendezvous)."""
        import os

        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            raise MixtralTrtError(f"{rank_dir}: a TensorRT rank needs a CUDA GPU, and none is visible")
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
        self.comm = Communicator(world_size, rank, share(unique_id() if rank == 0 else None))
        contract = GraphContract.load(rank_dir)
        manifest = Manifest("trt", contract, plan_file, {}, {}, backend_info=backend_info)
        self.runner = TrtRunner(rank_dir, manifest)
        if not self.runner.context.set_communicator(self.comm.capsule()):
            raise MixtralTrtError(f"{rank_dir / plan_file}: TensorRT refused the NCCL communicator")
        self._torch = torch

    def to_host(self, value: Any) -> np.ndarray:
        torch = self._torch
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                import ml_dtypes

                return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            return value.numpy()
        return np.asarray(value)

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Inputs -> every engine output (present.* stay CUDA tensors)."""
        return self.runner.run(feeds, list(self.runner.outputs))
