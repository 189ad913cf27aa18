"""A kernel variant: one plugin kernel with its dtype and compile-time constants, what plugins/aot.py compiles and
each plugin's aot.py describes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixtral_trt.common.quant import DEFAULT_BLOCK

TRITON_TYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
# the quantized GEMMs' default variants: int8 and int4 in export --quantize's default blocks (inputs per scale)
DEFAULT_QUANT = ((8, DEFAULT_BLOCK["int8"]), (4, DEFAULT_BLOCK["int4"]))
# the zero-point GEMMs' default variants: the published GPTQ / AWQ / compressed-tensors Mixtral checkpoints' int4
# in groups of 128
DEFAULT_QUANT_ZEROS = ((4, 128),)


def insert_after(signature: dict[str, str], after: str, extra: dict[str, str]) -> dict[str, str]:
    """`signature` with the arguments `extra` right after `after` (a variant's kernel taking more inputs)."""
    out = {}
    for name, kind in signature.items():
        out[name] = kind
        if name == after:
            out.update(extra)
    return out


@dataclass(frozen=True)
class KernelVariant:
    plugin: str
    kernel: str  # python attribute name of the @triton.jit function in plugins/<folder>/kernel.py
    folder: str
    signature: dict[str, str]  # argument -> Triton type ("*fp16", "i32", "constexpr"), in kernel order
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3

    @property
    def stem(self) -> str:
        tag = "_".join(f"{k.lower()}{int(v) if isinstance(v, bool) else v}" for k, v in self.constexprs.items())
        dtype = next((t[1:] for t in self.signature.values() if t.startswith("*") and t != "*i32"), "i32")
        return f"{self.folder}_{dtype}_{tag}"
