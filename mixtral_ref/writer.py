"""Write checkpoints in any layout of keymaps.LAYOUTS, and random checkpoints of a config.

`save_checkpoint` is the inverse of `checkpoint.load_state_dict`: the same key-map tables drive both.
Output is atomic (fileio.atomic_dir): a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mixtral_trt.chat.tokenizer import Tokenizer
from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir
from mixtral_trt.common.paths import mark_checkpoint
from mixtral_trt.common.progress import step

from . import keymaps
from .model import Mixtral

if TYPE_CHECKING:
    from rich.progress import Progress


MAX_INIT_PARAMETERS = 2_000_000_000  # random checkpoints are for tests, demos and benchmarks
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _stored_tensors(
    state: Mapping[str, torch.Tensor], cfg: MixtralConfig, layout: str
) -> dict[str, torch.Tensor]:
    shapes = keymaps.reference_shapes(cfg)
    if set(state) != set(shapes):
        odd = sorted(set(state) ^ set(shapes))
        raise MixtralTrtError(f"state dict does not match the config: {odd[0]} ({len(odd)} names differ)")
    stored = {}
    for entry in keymaps.plan(layout, cfg):
        t = state[entry.name].detach().cpu()
        if tuple(t.shape) != entry.shape:
            raise MixtralTrtError(
                f"{entry.name}: shape {list(t.shape)}, the config implies {list(entry.shape)}"
            )
        for part, piece in zip(entry.parts, entry.split(t), strict=True):
            # experts are views of one stacked tensor: safetensors needs each in its own storage
            stored[part.key] = (
                piece.contiguous().clone() if entry.kind in ("w13", "w2") else piece.contiguous()
            )
    return stored


def _shard(stored: dict[str, torch.Tensor], shards: int) -> list[list[str]]:
    """Consecutive groups of about equal byte size, none empty."""
    if not 1 <= shards <= len(stored):
        raise MixtralTrtError(f"shards={shards}: must be between 1 and the number of tensors ({len(stored)})")
    sizes = [t.numel() * t.element_size() for t in stored.values()]
    target, groups, acc = sum(sizes) / shards, [[]], 0
    for n, (key, size) in enumerate(zip(stored, sizes, strict=True)):
        groups_left, tensors_left = shards - len(groups), len(stored) - n
        if groups[-1] and groups_left and (acc >= target * len(groups) or tensors_left <= groups_left):
            groups.append([])
        groups[-1].append(key)
        acc += size
    return groups


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with its I/O failures (disk full, file too large: a SafetensorError carrying
    "os error N") raised as the OSError they are, so atomic outputs report them in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata={"format": "pt"})
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def _write(
    tmp: Path,
    stored: dict[str, torch.Tensor],
    cfg: MixtralConfig,
    layout: str,
    shards: int,
    extra_files: Mapping[str, Path],
) -> None:
    groups = _shard(stored, shards)
    stem = "consolidated" if layout == "consolidated" else "model"
    names = (
        [f"{stem}.safetensors"]
        if shards == 1
        else [f"{stem}-{k + 1:05d}-of-{shards:05d}.safetensors" for k in range(shards)]
    )
    for name, keys in zip(names, groups, strict=True):
        save_safetensors({k: stored[k] for k in keys}, tmp / name)
    if layout == "consolidated":
        config_name, config = "params.json", cfg.to_params_dict()
    else:
        dtype = next(iter(stored.values())).dtype
        config_name, config = "config.json", {**cfg.to_hf_dict(), "torch_dtype": DTYPE_NAMES.get(dtype)}
    (tmp / config_name).write_text(json.dumps(config, indent=2) + "\n")
    if shards > 1 and layout != "consolidated":
        total = sum(t.numel() * t.element_size() for t in stored.values())
        weight_map = {k: name for name, keys in zip(names, groups, strict=True) for k in keys}
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for name, source in extra_files.items():
        shutil.copyfile(source, tmp / name)
    mark_checkpoint(tmp)


def save_checkpoint(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    cfg: MixtralConfig,
    out: str | Path,
    layout: str = "hub",
    shards: int = 1,
    overwrite: bool = False,
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Write a `Mixtral` (or its state dict) as safetensors + config.json (hub, fused) or params.json
    (consolidated), in `shards` files; `extra_files` (name -> source file) are copied beside them."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    if layout not in keymaps.LAYOUTS:
        raise MixtralTrtError(f"layout {layout!r}: choose one of {', '.join(keymaps.LAYOUTS)}")
    stored = _stored_tensors(state, cfg, layout)
    _shard(stored, shards)  # argument check before anything is created
    with atomic_dir(out, overwrite) as tmp:
        _write(tmp, stored, cfg, layout, shards, extra_files or {})
    return Path(out)


def init_random(
    cfg: MixtralConfig, seed: int = 0, std: float = 0.02, dtype: torch.dtype = torch.float32
) -> Mixtral:
    """A `Mixtral` with N(0, std) weights and unit norms, the same for the same seed (any machine)."""
    with torch.device("meta"):
        model = Mixtral(cfg)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.to(dtype).eval()


def init_checkpoint(
    cfg: MixtralConfig,
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """A random checkpoint in the HF hub layout with the real Mixtral tokenizer (tokenizer.model) beside it.

    No tokenizer_config.json: transformers 5 converts this SentencePiece model into a fast tokenizer whose
    ids differ from SentencePiece's on some texts, so HF users should tokenize with `Tokenizer`."""
    if cfg.num_parameters() > MAX_INIT_PARAMETERS:
        raise MixtralTrtError(
            f"init: {cfg.num_parameters() / 1e9:.1f}B parameters is too many for a random "
            f"checkpoint (limit {MAX_INIT_PARAMETERS / 1e9:.0f}B); use a smaller preset"
        )
    tokenizer = Tokenizer.for_config(cfg)
    generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    with atomic_dir(out, overwrite) as tmp:
        with step(progress, f"random weights (seed {seed})"):
            model = init_random(cfg, seed)
        with step(progress, f"write {out}"):
            _write(
                tmp,
                _stored_tensors(model.state_dict(), cfg, "hub"),
                cfg,
                "hub",
                1,
                {"tokenizer.model": tokenizer.path},
            )
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return Path(out)
