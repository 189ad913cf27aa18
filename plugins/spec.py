"""One declarative spec per plugin: the source of the plugin's ONNX node attributes (written by the `trt`
lowering), its TensorRT registration (plugins/<folder>/trt.py), its CPU binding (<folder>/cpu.py)
and `mixtral-export plugins list`; `module(part)` opens the rest of its folder."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

NAMESPACE = "mixtral"
VERSION = "1"
FLOAT = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class PluginTensor:
    name: str
    dtypes: tuple[str, ...]  # allowed dtypes: fp32 fp16 bf16 i32; "like:x" = the dtype of input x
    shape: str  # documentation, e.g. "[T, E]"
    doc: str


@dataclass(frozen=True)
class PluginField:
    name: str
    type: str  # "int" (the only field type these plugins need)
    doc: str


@dataclass(frozen=True)
class PluginSpec:
    name: str  # = the ONNX node's op_type = the TensorRT plugin name
    doc: str
    inputs: tuple[PluginTensor, ...]
    outputs: tuple[PluginTensor, ...]
    fields: tuple[PluginField, ...]
    folder: str  # plugins/<folder>/: the whole plugin (kernel, launch, reference, trt, aot, cpu)
    namespace: str = NAMESPACE
    version: str = VERSION

    def module(self, part: str) -> ModuleType:
        """plugins/<folder>/<part>.py, imported on first use: `trt` (its TensorRT definition), `aot` (its kernel
        variants), `cpu` (its ONNX Runtime Python op), `launch`, `kernel`, `reference`."""
        return importlib.import_module(f"mixtral_trt.plugins.{self.folder}.{part}")

    @property
    def plugin_id(self) -> str:
        return f"{self.namespace}::{self.name}"

    def node_attributes(self, aot: bool = True, **fields: int) -> dict[str, int | str]:
        """ONNX attributes for a node TensorRT's parser maps to this plugin (fields checked by name)."""
        expected = {f.name for f in self.fields}
        if set(fields) != expected:
            raise ValueError(f"{self.name}: fields {sorted(fields)} given, {sorted(expected)} expected")
        return {"plugin_namespace": self.namespace, "plugin_version": self.version, "aot": int(aot),
                **{k: int(v) for k, v in fields.items()}}
