"""`quantization_config` of a quantized HF checkpoint (config.json): which format, every field checked.

Formats read (README, "Quantized checkpoints"):
  gptq                quant_method "gptq": bits 4 | 8, group_size 32 | 64 | 128 | -1 (per channel), desc_act,
                      sym, checkpoint_format "gptq" (v1: stored zero = zero - 1) | "gptq_v2" (stored as is)
  awq                 quant_method "awq", version "gemm": 4 bits, zero_point true, q_group_size / group_size
  compressed-tensors  format "pack-quantized" (int4 / int8, strategy group | channel, symmetric or not,
                      actorder) or "float-quantized" (FP8 e4m3, strategy tensor | channel); one config group
                      targeting Linear; `ignore` lists the linears left float
Anything else (3 or 2 bits, exllama / marlin / gemv serializations, per-module overrides, block FP8,
quantized KV caches) is a CheckpointError naming config.json and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtral_trt.common.errors import CheckpointError

GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class CheckpointQuant:
    """One checkpoint's weight quantization, as its config declares it."""

    method: str  # "gptq" | "awq" | "compressed-tensors"
    serialization: str  # gptq: "gptq" | "gptq_v2"; awq: "gemm"; c-t: "pack-quantized" | "float-quantized"
    kind: str  # "int" | "fp8"
    bits: int  # 4 | 8
    group_size: int  # inputs per scale; 0: one scale per output channel (int) or fp8 channel; -1: fp8 tensor
    symmetric: bool
    act_order: bool  # groups given by g_idx (desc_act / actorder): input channels of a group not contiguous
    ignore: tuple[str, ...] = ()  # linears the config leaves float (names or "re:" patterns)
    lm_head: bool | None = None  # gptq's own flag: whether the LM head is quantized (None: not said)
    activations: str = "float"  # c-t FP8: "fp8 dynamic" / "fp8 static" (the engine keeps them float)

    @property
    def name(self) -> str:
        if self.kind == "fp8":
            return f"{self.method} fp8-e4m3 per-{'tensor' if self.group_size < 0 else 'channel'}"
        groups = f"group {self.group_size}" if self.group_size else "per-channel"
        return (f"{self.method} ({self.serialization}) int{self.bits} {groups}, "
                f"{'symmetric' if self.symmetric else 'asymmetric'}{', act-order' if self.act_order else ''}")

    def summary(self) -> dict[str, Any]:
        """What the contract / manifest record of the checkpoint's quantization."""
        return {"format": self.method, "serialization": self.serialization, "kind": self.kind, "bits": self.bits,
                "group_size": self.group_size, "symmetric": self.symmetric, "act_order": self.act_order,
                "activations": self.activations}

    def ignored(self, module: str) -> bool:
        """Whether the config's ignore list names the HF module `module` (e.g. model.layers.0.self_attn.q_proj)."""
        for entry in self.ignore:
            if entry.startswith("re:"):
                if re.match(entry[3:], module):
                    return True
            elif module == entry or module.endswith("." + entry) or entry == module.rsplit(".", 1)[-1]:
                return True
        return False


def _field(cfg: dict, key: str, types: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in cfg:
        if default is ...:
            raise CheckpointError(f"{where}: field {key!r} is missing")
        return default
    value = cfg[key]
    if value is None and default is not ...:
        return default
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CheckpointError(f"{where}.{key}: expected {_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise CheckpointError(f"{where}.{key}: expected {_names(types)}, got {value!r}")
    return value


def _names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def _choice(value: Any, allowed, where: str, why: str = "") -> Any:
    if value not in allowed:
        raise CheckpointError(f"{where}: {value!r} is not supported (supported: "
                              f"{', '.join(map(repr, allowed))}){'; ' + why if why else ''}")
    return value


def _ignore_list(cfg: dict, key: str, where: str) -> tuple[str, ...]:
    value = cfg.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointError(f"{where}.{key}: expected a list of module names, got {value!r}")
    return tuple(value)


def parse_quantization(config: dict, path: Path) -> CheckpointQuant | None:
    """The checkpoint's quantization from config.json's `quantization_config`; None for a float checkpoint."""
    q = config.get("quantization_config")
    if q is None:
        return None
    where = f"{path}: quantization_config"
    if not isinstance(q, dict):
        raise CheckpointError(f"{where}: expected an object, got {type(q).__name__}")
    method = _choice(_field(q, "quant_method", str, where), ("gptq", "awq", "compressed-tensors"),
                     f"{where}.quant_method")
    return {"gptq": _gptq, "awq": _awq, "compressed-tensors": _compressed}[method](q, where)


def _gptq(q: dict, where: str) -> CheckpointQuant:
    bits = _choice(_field(q, "bits", int, where), (4, 8), f"{where}.bits")
    group = _choice(_field(q, "group_size", int, where), (*GROUP_SIZES, -1), f"{where}.group_size")
    desc_act = _field(q, "desc_act", bool, where)
    sym = _field(q, "sym", bool, where)
    fmt = _choice(_field(q, "checkpoint_format", str, where, "gptq"), ("gptq", "gptq_v2"),
                  f"{where}.checkpoint_format", "exllama / marlin / bitblas serializations are kernel layouts; "
                  "save the model in the gptq or gptq_v2 format")
    if q.get("dynamic"):
        raise CheckpointError(f"{where}.dynamic: per-module overrides are not supported")
    lm_head = _field(q, "lm_head", bool, where, None)
    return CheckpointQuant("gptq", fmt, "int", bits, max(group, 0), sym, desc_act,
                           _ignore_list(q, "modules_to_not_convert", where), lm_head)


def _awq(q: dict, where: str) -> CheckpointQuant:
    version = _field(q, "version", str, where, "gemm")
    _choice(version.lower(), ("gemm",), f"{where}.version", "GEMV / exllama / marlin / ipex packings differ")
    bits = _choice(_field(q, "bits", int, where, None) or _field(q, "w_bit", int, where), (4,), f"{where}.bits")
    group = _field(q, "group_size", int, where, None) or _field(q, "q_group_size", int, where)
    _choice(group, GROUP_SIZES, f"{where}.group_size")
    if not _field(q, "zero_point", bool, where, True):
        raise CheckpointError(f"{where}.zero_point: false is not supported (AWQ GEMM stores zero points)")
    return CheckpointQuant("awq", "gemm", "int", bits, group, False, False,
                           _ignore_list(q, "modules_to_not_convert", where))


def _compressed(q: dict, where: str) -> CheckpointQuant:
    status = _field(q, "quantization_status", str, where, "compressed")
    _choice(status, ("compressed",), f"{where}.quantization_status", "only compressed checkpoints store codes")
    if q.get("kv_cache_scheme") is not None:
        raise CheckpointError(f"{where}.kv_cache_scheme: quantized KV caches are not supported")
    if q.get("sparsity_config"):
        raise CheckpointError(f"{where}.sparsity_config: sparse checkpoints are not supported")
    groups = _field(q, "config_groups", dict, where)
    if len(groups) != 1:
        raise CheckpointError(f"{where}.config_groups: exactly one group is supported, got {len(groups)}")
    (gname, group), = groups.items()
    gwhere = f"{where}.config_groups.{gname}"
    if not isinstance(group, dict):
        raise CheckpointError(f"{gwhere}: expected an object")
    targets = _field(group, "targets", list, gwhere)
    if targets != ["Linear"]:
        raise CheckpointError(f"{gwhere}.targets: {targets!r} is not supported (['Linear'])")
    fmt = _field(group, "format", str, gwhere, None) or _field(q, "format", str, where)
    _choice(fmt, ("pack-quantized", "float-quantized"), f"{where}.format",
            "naive-quantized / marlin-24 / nvfp4 / sparse formats are not read")
    if group.get("output_activations") is not None:
        raise CheckpointError(f"{gwhere}.output_activations: output quantization is not supported")
    w = _field(group, "weights", dict, gwhere)
    wwhere = f"{gwhere}.weights"
    if _field(w, "dynamic", (bool, str), wwhere, False):
        raise CheckpointError(f"{wwhere}.dynamic: dynamic weight quantization is not supported")
    bits = _field(w, "num_bits", int, wwhere)
    qtype = _field(w, "type", str, wwhere)
    strategy = _field(w, "strategy", str, wwhere)
    sym = _field(w, "symmetric", bool, wwhere)
    actorder = _field(w, "actorder", (str, bool, type(None)), wwhere, None)
    ignore = _ignore_list(q, "ignore", where)
    acts = group.get("input_activations")
    if fmt == "float-quantized":
        _choice(qtype, ("float",), f"{wwhere}.type")
        _choice(bits, (8,), f"{wwhere}.num_bits", "FP8 e4m3 only")
        _choice(strategy, ("tensor", "channel"), f"{wwhere}.strategy", "block / group FP8 is not read")
        if not sym:
            raise CheckpointError(f"{wwhere}.symmetric: asymmetric FP8 is not supported")
        activations = "float"
        if acts is not None:
            if not isinstance(acts, dict) or acts.get("type") != "float" or acts.get("num_bits") != 8:
                raise CheckpointError(f"{gwhere}.input_activations: only FP8 activations are read, got {acts!r}")
            activations = "fp8 dynamic" if acts.get("dynamic") else "fp8 static"
        return CheckpointQuant("compressed-tensors", fmt, "fp8", 8, -1 if strategy == "tensor" else 0, True,
                               False, ignore, activations=activations)
    _choice(qtype, ("int",), f"{wwhere}.type")
    _choice(bits, (4, 8), f"{wwhere}.num_bits")
    _choice(strategy, ("group", "channel"), f"{wwhere}.strategy")
    if acts is not None:
        raise CheckpointError(f"{gwhere}.input_activations: weight-only (W4A16 / W8A16) pack-quantized models only")
    group_size = 0
    if strategy == "group":
        group_size = _choice(_field(w, "group_size", int, wwhere), GROUP_SIZES, f"{wwhere}.group_size")
    _choice(actorder, (None, False, "weight", "static", "group", True), f"{wwhere}.actorder")
    act_order = actorder in ("group", True)  # "weight" / "static": groups stay contiguous (no g_idx)
    if act_order and strategy != "group":
        raise CheckpointError(f"{wwhere}.actorder: needs strategy 'group'")
    return CheckpointQuant("compressed-tensors", fmt, "int", bits, group_size, sym, act_order, ignore)
