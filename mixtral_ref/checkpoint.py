"""Load checkpoints: find the weight files, check every tensor against the config, build the model.

Safetensors only (never unpickle). Files are memory-mapped; the model is built on the meta device and
receives the mapped tensors with `load_state_dict(assign=True, strict=True)`, so only the stacked
expert weights (and dtype casts) are copied. Every problem is a `CheckpointError` / `ConfigError`
whose one-line message names the file or tensor.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.dtypes import SAFETENSORS_FLOATS
from mixtral_trt.common.errors import CheckpointError
from mixtral_trt.common.paths import confined
from mixtral_trt.common.progress import bar

from . import keymaps
from .model import Mixtral
from .quant_checkpoint import QuantizedLinears, index_quantized, read_checkpoint_quant

if TYPE_CHECKING:
    from rich.progress import Progress


HF_SINGLE = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
CONSOLIDATED = "consolidated.safetensors"
CONSOLIDATED_SHARDS = "consolidated-*-of-*.safetensors"
PICKLE_PATTERNS = ("*.bin", "*.pth", "*.pt", "*.ckpt", "*.pkl")


@dataclass(frozen=True)
class CheckpointInfo:
    """What `inspect_checkpoint` found; every tensor's name, shape and dtype has been checked."""

    path: Path
    layout: str  # one of keymaps.LAYOUTS
    config: MixtralConfig
    files: tuple[Path, ...]
    dtypes: dict[str, int]  # stored dtype (safetensors name) -> number of tensors
    nbytes: int  # total size of the weight files
    quantized: QuantizedLinears | None = None  # GPTQ / AWQ / compressed-tensors linears (quant_checkpoint.py)

    @property
    def dtype(self) -> str:
        return "+".join(sorted(self.dtypes))


def find_weight_files(path: Path) -> tuple[str, tuple[Path, ...]]:
    """('hf' | 'consolidated', files) for a checkpoint directory, or a CheckpointError saying why not."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (pass the checkpoint directory, not a file)")
    if (path / HF_INDEX).is_file():
        return "hf", _confined(path, _index_files(path / HF_INDEX))
    if (path / HF_SINGLE).is_file():
        return "hf", _confined(path, (path / HF_SINGLE,))
    shards = sorted(path.glob(CONSOLIDATED_SHARDS))
    if (path / CONSOLIDATED).is_file():
        return "consolidated", _confined(path, (path / CONSOLIDATED, *shards))
    if shards:
        return "consolidated", _confined(path, tuple(shards))
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern))
    if pickles:
        raise CheckpointError(
            f"{path / pickles[0]}: pickle checkpoints are refused because loading them can run arbitrary "
            "code; convert to safetensors in a trusted environment (e.g. transformers "
            "`MixtralForCausalLM.from_pretrained(d).save_pretrained(out)`)"
        )
    raise CheckpointError(f"{path}: no weights found (expected {HF_SINGLE}, {HF_INDEX} or {CONSOLIDATED})")


def _confined(path: Path, files: tuple[Path, ...]) -> tuple[Path, ...]:
    """The weight files, each checked to resolve inside the checkpoint directory (paths.confined)."""
    return tuple(confined(path, f, CheckpointError) for f in files)


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(confined(index.parent, index, CheckpointError).read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index ({type(e).__name__}: {e})") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: weight_map: expected an object (tensor name -> file name), "
                              f"got {type(weight_map).__name__}")
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise CheckpointError(f"{index}: weight_map[{key!r}]: expected a file name in the checkpoint "
                                  f"directory, got {name!r}")
    return weight_map


def _index_files(index: Path) -> tuple[Path, ...]:
    files = tuple(index.parent / n for n in sorted(set(_weight_map(index).values())))
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in {index.name} but missing")
    return files


class _Tensors:
    """Stored tensor name -> (file, shape, dtype) over all weight files, with lazy mmapped reads."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        from safetensors import SafetensorError, safe_open

        self.handles, self.where = {}, {}
        for f in files:
            try:
                handle = safe_open(str(f), framework="pt")
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
            self.handles[f] = handle
            for key in handle.keys():  # noqa: SIM118  (safe_open has no __iter__)
                if key in self.where:
                    raise CheckpointError(f"{f}: tensor {key} is also stored in {self.where[key].name}")
                self.where[key] = f

    def meta(self, key: str) -> tuple[list[int], str]:
        sl = self.handles[self.where[key]].get_slice(key)
        return list(sl.get_shape()), sl.get_dtype()

    def get(self, key: str) -> torch.Tensor:
        return self.handles[self.where[key]].get_tensor(key)


def _open(path: Path, cfg: MixtralConfig | None
          ) -> tuple[str, MixtralConfig, _Tensors, list[keymaps.Entry], QuantizedLinears | None]:
    family, files = find_weight_files(path)
    cfg = MixtralConfig.from_dir(path) if cfg is None else cfg
    quant = read_checkpoint_quant(path)
    tensors = _Tensors(files)
    if family == "consolidated":
        layout = "consolidated"
    else:
        layout = keymaps.detect_hf_layout(set(tensors.where))
        if layout is None:
            raise CheckpointError(
                f"{files[0]}: no Mixtral expert weights (neither block_sparse_moe.experts.* "
                "nor mlp.experts.*): not a Mixtral checkpoint"
            )
        if (path / HF_INDEX).is_file():
            _check_index(path / HF_INDEX, tensors)
    entries = keymaps.plan(layout, cfg)
    expected = {part.key: part.shape for entry in entries for part in entry.parts}
    quantized = None
    if quant is not None:
        quantized = index_quantized(quant, path, layout, expected, tensors.where, tensors.meta)
    _check(path, cfg, layout, tensors, expected, quantized)
    return layout, cfg, tensors, entries, quantized


def _check_index(index: Path, tensors: _Tensors) -> None:
    for key, name in _weight_map(index).items():
        if key not in tensors.where or tensors.where[key].name != name:
            raise CheckpointError(f"{index}: tensor {key} is listed in {name}, which does not contain it")


def _check(path: Path, cfg: MixtralConfig, layout: str, tensors: _Tensors, expected: dict[str, tuple[int, ...]],
           quantized: QuantizedLinears | None) -> None:
    config_name = "config.json" if (path / "config.json").is_file() else "params.json"
    stored_quantized = quantized.stored() if quantized else set()
    for key, shape in expected.items():
        if quantized and key in quantized.linears:
            continue  # checked by index_quantized
        if key not in tensors.where:
            raise CheckpointError(
                f"{path}: tensor {key} is missing (the config has {cfg.num_layers} layers, "
                f"{cfg.num_experts} experts)"
            )
        stored, dtype = tensors.meta(key)
        f = tensors.where[key].name
        if tuple(stored) != shape:
            raise CheckpointError(
                f"{f}: tensor {key} has shape {stored}, but {config_name} implies {list(shape)}"
            )
        if dtype not in SAFETENSORS_FLOATS:
            raise CheckpointError(
                f"{f}: tensor {key} has dtype {dtype}; expected one of "
                f"{', '.join(SAFETENSORS_FLOATS)}"
                + ("" if quantized else " (a quantized checkpoint declares it in config.json's quantization_config)")
            )
    tolerated = {"lm_head.weight", "output.weight"} if cfg.tie_word_embeddings else set()
    unknown = sorted(set(tensors.where) - set(expected) - tolerated - stored_quantized)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise CheckpointError(
            f"{tensors.where[unknown[0]].name}: unexpected tensor {unknown[0]}{more} for a "
            f"{layout}-layout Mixtral with {cfg.num_layers} layers and {cfg.num_experts} experts"
        )


def plan_checkpoint(path: str | Path) -> tuple[MixtralConfig, list[keymaps.Entry], dict[str, Path]]:
    """Validated (config, entries, file of every stored tensor) from the headers alone: what a streaming
    reader needs to build each reference parameter without loading the checkpoint."""
    return plan_quantized_checkpoint(path)[:3]


def plan_quantized_checkpoint(path: str | Path
                              ) -> tuple[MixtralConfig, list[keymaps.Entry], dict[str, Path], QuantizedLinears | None]:
    """`plan_checkpoint` and the checkpoint's quantized linears (None for a float checkpoint)."""
    _, cfg, tensors, entries, quantized = _open(Path(path), None)
    return cfg, entries, dict(tensors.where), quantized


def input_orders(path: str | Path) -> dict[str, np.ndarray]:
    """Stored float-weight key -> input order (int64 [K], quant_linear.input_order) of every quantized linear of
    an act-order checkpoint whose groups are not contiguous; empty otherwise. Reads only the g_idx tensors."""
    _, _, tensors, _, quantized = _open(Path(path), None)
    if quantized is None or not quantized.quant.act_order:
        return {}
    return {key: order for key in quantized.linears if (order := quantized.input_order(key, tensors.get)) is not None}


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Validate a checkpoint from the file headers alone (names, shapes, dtypes); reads no tensor data."""
    path = Path(path)
    layout, cfg, tensors, _, quantized = _open(path, None)
    dtypes = Counter(tensors.meta(k)[1] for k in tensors.where)
    files = tuple(tensors.handles)
    return CheckpointInfo(path, layout, cfg, files, dict(dtypes), sum(f.stat().st_size for f in files), quantized)


def load_state_dict(
    path: str | Path,
    cfg: MixtralConfig | None = None,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Reference parameter name -> tensor (memory-mapped where no copy is needed), after every check.

    `cfg` defaults to the directory's config.json / params.json; `dtype` None keeps the stored dtype.
    """
    return _load(Path(path), cfg, dtype, progress)[1]


def _load(
    path: Path, cfg: MixtralConfig | None, dtype: torch.dtype | None, progress: Progress | None
) -> tuple[MixtralConfig, dict[str, torch.Tensor]]:
    _, cfg, tensors, entries, quantized = _open(path, cfg)

    def get(key: str) -> torch.Tensor:  # a quantized linear is dequantized as its format does (float32)
        return quantized.dequantized(key, tensors.get) if quantized and key in quantized.linears else tensors.get(key)

    state = {}
    with bar(progress, "load weights", len(entries)) as advance:
        for entry in entries:
            t = entry.combine([get(p.key) for p in entry.parts])
            state[entry.name] = t if dtype is None else t.to(dtype)
            advance(1)
    return cfg, state


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> Mixtral:
    """Checkpoint directory (any layout in keymaps.LAYOUTS) -> `Mixtral` in eval mode."""
    cfg, state = _load(Path(path), None, dtype, progress)
    with torch.device("meta"):
        model = Mixtral(cfg)
    model.load_state_dict(state, assign=True, strict=True)
    return model.to(device).eval()
