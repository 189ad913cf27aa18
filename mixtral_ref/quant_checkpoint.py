"""The quantized linears of a checkpoint: which stored weights are quantized, their stored tensors checked
from the headers against config.json's `quantization_config` (quant_config.py) and its ignore lists, and each
one read as the format dequantizes it (quant_linear.py). Only the HF per-expert ("hub") layout is read
quantized: that is how GPTQ, AWQ and compressed-tensors save Mixtral.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mixtral_trt.common.errors import CheckpointError
from mixtral_trt.common.fileio import read_json_object
from mixtral_trt.common.paths import confined

from .quant_config import CheckpointQuant, parse_quantization
from .quant_linear import (
    QuantLinear,
    expected_shapes,
    input_order,
    is_quantized,
    optional_names,
    read_linear,
    stored_names,
)

NOT_LINEAR = ("norm.weight", "embed_tokens.weight")  # 2-D float weights that are not linears (never quantized)


def read_checkpoint_quant(path: Path) -> CheckpointQuant | None:
    """The quantization declared by `path`/config.json (None for a float checkpoint or a params.json one)."""
    f = path / "config.json"
    if not f.is_file():
        return None
    return parse_quantization(read_json_object(confined(path, f, CheckpointError), CheckpointError), f)


@dataclass(frozen=True)
class QuantizedLinears:
    """Stored float-weight key (what keymaps expects, e.g. `...q_proj.weight`) -> its quantized module."""

    quant: CheckpointQuant
    linears: dict[str, tuple[str, int, int]]  # key -> (module name, N, K)
    files: dict[str, Path]  # key -> file holding its first stored tensor
    scale_dtypes: frozenset[str] = frozenset()  # safetensors dtypes of the stored scales

    def stored(self) -> set[str]:
        """Every stored tensor name the quantized linears account for."""
        return {name for base, _, _ in self.linears.values()
                for name in (*stored_names(self.quant, base), *optional_names(self.quant, base))}

    def stored_of(self, key: str) -> tuple[str, ...]:
        """The stored tensors of the quantized linear `key` (those its dequantization reads)."""
        return stored_names(self.quant, self.linears[key][0])

    def read(self, key: str, get: Callable[[str], torch.Tensor], g_idx=None) -> QuantLinear:
        """The unpacked linear `key` (`g_idx`: its group indices, already read and checked: read_linear)."""
        base, n, k = self.linears[key]
        return read_linear(self.quant, base, get, n, k, self.files[key].name, g_idx)

    def input_order(self, key: str, get: Callable[[str], torch.Tensor]):
        """int64 [K]: the inputs of the act-order linear `key` sorted by group (quant_linear.input_order), or None
        when its groups are contiguous already."""
        base, _, k = self.linears[key]
        return input_order(self.quant, base, get, k, self.files[key].name)

    def dequantized(self, key: str, get: Callable[[str], torch.Tensor]) -> torch.Tensor:
        """float32 [N, K]: the format's dequantization of the stored linear `key`."""
        return torch.from_numpy(self.read(key, get).dequantize())

    def kinds(self) -> dict[str, int]:
        """Number of quantized linears per kind (experts, attention, router, LM head), for `inspect`."""
        out: dict[str, int] = {}
        for base, _, _ in self.linears.values():
            kind = ("experts" if ".experts." in base else "router" if base.endswith(".gate")
                    else "lm_head" if base.endswith("lm_head") else "attention")
            out[kind] = out.get(kind, 0) + 1
        return out


def index_quantized(q: CheckpointQuant, path: Path, layout: str, expected: dict[str, tuple[int, ...]],
                    where: dict[str, Path], meta: Callable[[str], tuple[list[int], str]]) -> QuantizedLinears:
    """Find and check (headers only) every quantized linear among the `expected` stored weights."""
    config = path / "config.json"
    if layout != "hub":
        raise CheckpointError(f"{config}: quantization_config: quantized {layout}-layout checkpoints are not read "
                              "(GPTQ / AWQ / compressed-tensors save Mixtral with per-expert weights)")

    def stored_meta(name: str):
        return meta(name) if name in where else None

    linears, files, scale_dtypes = {}, {}, set()
    for key, shape in expected.items():
        if len(shape) != 2 or key.endswith(NOT_LINEAR):
            continue
        base = key.removesuffix(".weight")
        quantized = is_quantized(q, base, stored_meta)
        if q.ignored(base) and quantized:
            raise CheckpointError(f"{where[stored_names(q, base)[0]].name}: {base} is stored quantized but "
                                  f"{config.name}'s quantization_config ignores it")
        if not quantized:
            if q.method == "compressed-tensors" and not q.ignored(base):
                raise CheckpointError(f"{path}: {base} is stored in float but {config.name}'s quantization_config "
                                      "neither quantizes nor ignores it (ignore list)")
            if q.lm_head and base == "lm_head":
                raise CheckpointError(f"{path}: lm_head is stored in float but {config.name}'s quantization_config "
                                      "says lm_head: true")
            continue
        n, k = shape
        for name, (want, dtypes) in expected_shapes(q, base, n, k, str(config)).items():
            if name not in where:
                raise CheckpointError(f"{path}: tensor {name} is missing ({q.method} stores {base} as "
                                      f"{', '.join(s.rsplit('.', 1)[1] for s in stored_names(q, base))})")
            got, dtype = meta(name)
            if tuple(got) != tuple(want) and not (want == (1,) and got == []):
                raise CheckpointError(f"{where[name].name}: tensor {name} has shape {got}, but {config.name} "
                                      f"implies {list(want)}")
            if dtype not in dtypes:
                raise CheckpointError(f"{where[name].name}: tensor {name} has dtype {dtype}; expected "
                                      f"{' or '.join(dtypes)}")
            if name.endswith(("scales", "weight_scale")):
                scale_dtypes.add(dtype)
        linears[key] = (base, n, k)
        files[key] = where[stored_names(q, base)[0]]
    if not linears:
        raise CheckpointError(f"{config}: quantization_config is set but no linear is stored quantized")
    return QuantizedLinears(q, linears, files, frozenset(scale_dtypes))
