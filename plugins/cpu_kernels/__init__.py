"""mixtral_trt.plugins.cpu_kernels: our own CPU kernels as an ONNX Runtime custom-op library (C++17, src/).

The ops (domain `mixtral.cpu`, I/O tables in README.md): `MoE`, `MoEBF16`, `MoEQ`: one fused node per MoE
layer; `Linear`, `LinearBF16`, `LinearQ`: y = x Wᵀ (the LM head, the attention projections).
`build.py` compiles the library; this module finds it (no import of onnxruntime here).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from functools import cache
from pathlib import Path

from mixtral_trt.common.errors import MixtralTrtError

from .build import LIBRARY, output_dir

DOMAIN = "mixtral.cpu"
ISA_ENV = "MIXTRAL_TRT_CPU_ISA"  # avx512 | avx2 | portable: force the kernels' instruction set
LIBRARY_ENV = "MIXTRAL_TRT_CPU_KERNELS"  # a library to use in place of the built one
BUILD_HINT = "make cpu-kernels (or: python -m mixtral_trt.plugins.cpu_kernels)"


def library_path(variant: str = "release") -> Path | None:
    """The library to load: $MIXTRAL_TRT_CPU_KERNELS, or the built one; None where neither exists."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override) if Path(override).is_file() else None
    path = output_dir(variant) / LIBRARY
    return path if path.is_file() else None


def require_library() -> Path:
    path = library_path()
    if path is None:
        raise MixtralTrtError(f"the cpu_kernels library is not built: {BUILD_HINT}")
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@cache
def _handle(path: str) -> ctypes.CDLL:
    return ctypes.CDLL(path)


def isa(path: Path | None = None) -> str:
    """The instruction set the library's kernels use here (honours MIXTRAL_TRT_CPU_ISA)."""
    fn = _handle(str(path or require_library())).mixtral_cpu_isa
    fn.restype = ctypes.c_char_p
    return fn().decode()


def supported_isas(path: Path | None = None) -> list[str]:
    """The instruction sets this CPU runs, best first."""
    fn = _handle(str(path or require_library())).mixtral_cpu_supported_isas
    fn.restype = ctypes.c_char_p
    return fn().decode().split(",")


def register(session_options, path: Path | None = None) -> None:
    """Register the library's ops in onnxruntime SessionOptions."""
    session_options.register_custom_ops_library(str(path or require_library()))
