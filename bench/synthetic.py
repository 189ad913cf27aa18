"""Synthetic checkpoints of real Mixtral dimensions, written tensor by tensor (memory ~ one shard).

For memory and scale checks (streaming export of a checkpoint larger than memory would allow): random
bf16 weights in the HF hub layout, sharded with a `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.fileio import atomic_dir
from mixtral_trt.common.paths import mark_checkpoint
from mixtral_trt.common.progress import bar
from mixtral_trt.mixtral_ref import keymaps
from mixtral_trt.mixtral_ref.writer import save_safetensors

if TYPE_CHECKING:
    from rich.progress import Progress


def write_synthetic_checkpoint(cfg: MixtralConfig, out: str | Path, dtype: torch.dtype = torch.bfloat16,
                               shard_bytes: int = 1 << 30, seed: int = 0, overwrite: bool = False,
                               progress: Progress | None = None) -> Path:
    gen = torch.Generator().manual_seed(seed)
    parts = [(p.key, p.shape) for entry in keymaps.plan("hub", cfg) for p in entry.parts]
    weight_map: dict[str, str] = {}
    shards: list[dict[str, torch.Tensor]] = [{}]
    with atomic_dir(out, overwrite) as tmp, bar(progress, "write synthetic checkpoint", len(parts)) as advance:
        def flush(final: bool = False) -> None:
            index = len(shards)
            name = f"model-{index:05d}.safetensors"
            save_safetensors(shards[-1], tmp / name)
            weight_map.update({k: name for k in shards[-1]})
            if not final:
                shards[-1] = {}
                shards.append({})

        size = 0
        for key, shape in parts:
            std = 1.0 if key.endswith("norm.weight") else 0.02
            t = torch.randn(shape, generator=gen, dtype=torch.float32).mul_(std)
            if key.endswith("norm.weight"):
                t = t.abs_().add_(0.5)
            shards[-1][key] = t.to(dtype)
            size += shards[-1][key].nbytes
            advance(1)
            if size >= shard_bytes:
                flush()
                size = 0
        flush(final=True)
        total = len(shards)
        renamed = {}
        for i in range(1, total + 1):  # model-0000i.safetensors -> model-0000i-of-0000n.safetensors
            old, new = f"model-{i:05d}.safetensors", f"model-{i:05d}-of-{total:05d}.safetensors"
            (tmp / old).rename(tmp / new)
            renamed[old] = new
        index = {"metadata": {}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=1))
        mark_checkpoint(tmp)
    return Path(out)
