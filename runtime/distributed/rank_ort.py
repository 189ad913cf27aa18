"""One rank of a tensor-parallel ONNX Runtime engine: the rank graph's pieces as ONNX Runtime sessions,
the collectives between them done by torch.distributed (gloo) across the rank processes.

`program.json` (exporter/shard/cut.py) lists the steps: run a piece on the values it needs, or run a
collective on one value. The KV cache stays in this process (numpy arrays), keyed by the coordinator's
cache ids. B batch, G_r this rank's kv heads, P cached tokens, D head_dim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError

from ..backends.ort import check_ort_version, session_options


def _torch_view(array: np.ndarray):
    import torch

    if array.dtype.name == "bfloat16":  # ml_dtypes: torch shares the 16-bit pattern
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class OrtRankProgram:
    def __init__(self, rank_dir: Path, program_file: str, world_size: int, threads: int) -> None:
        import onnxruntime as ort

        check_ort_version(ort.__version__)
        program = json.loads((rank_dir / program_file).read_text())
        self.world_size = world_size
        self.steps: list[dict[str, Any]] = program["steps"]
        so = session_options(threads)
        self.sessions = {}
        for s in self.steps:
            if "piece" in s:
                try:
                    self.sessions[s["piece"]] = ort.InferenceSession(str(rank_dir / s["piece"]), so,
                                                                     providers=["CPUExecutionProvider"])
                except Exception as e:  # ORT raises its own exception types
                    raise MixtralTrtError(f"{rank_dir / s['piece']}: ONNX Runtime cannot open the piece "
                                          f"({' '.join(str(e).split())[:300]})") from None

    def _collective(self, step: dict[str, Any], value: np.ndarray) -> np.ndarray:
        import torch.distributed as dist

        value = np.array(value)  # writable, contiguous: gloo reduces in place
        if step["collective"] == "all_reduce":
            dist.all_reduce(_torch_view(value))
            return value
        if step["collective"] == "all_gather":
            import torch

            parts = [torch.empty_like(_torch_view(value)) for _ in range(self.world_size)]
            dist.all_gather(parts, _torch_view(value))
            return np.concatenate([p.numpy() if p.dtype != torch.bfloat16 else
                                   p.view(torch.uint16).numpy().view(value.dtype) for p in parts])
        raise RuntimeError(f"collective {step['collective']!r} is not run by the CPU rank program")

    @staticmethod
    def to_host(value: np.ndarray) -> np.ndarray:
        return value

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph inputs -> every value the program computed (graph outputs among them)."""
        env = dict(feeds)
        for s in self.steps:
            if "piece" in s:
                outs = self.sessions[s["piece"]].run(s["outputs"], {n: env[n] for n in s["inputs"]})
                env.update(zip(s["outputs"], outs, strict=True))
            else:
                env[s["output"]] = self._collective(s, env[s["input"]])
        return env
