"""Running the plugin kernels on CPU with Triton's interpreter (TRITON_INTERPRET=1).

Triton reads the variable when `@triton.jit` decorates a kernel, so it must be set before the kernel
modules (plugins/*/kernel.py, plugins/dequant.py) are imported; `require_interpreter()` sets it, or raises
a clear error when they were already imported for GPU compilation in this process (and
`require_compiler()` the reverse, for ahead-of-time compilation). The interpreter's bf16 `tl.dot` is
wrong, so bf16 inputs run as fp32 copies here (outputs cast back to bf16).
"""

from __future__ import annotations

import os
import sys

from mixtral_trt.common.errors import MixtralTrtError


def _kernels_imported(interpreted: bool) -> list[str]:
    """Kernel modules already imported in the given mode (interpreted or compiled)."""
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("mixtral_trt.plugins.") or name.rsplit(".", 1)[-1] not in ("kernel", "dequant"):
            continue
        for value in vars(module).values():
            if type(value).__name__ in ("InterpretedFunction", "JITFunction"):
                if (type(value).__name__ == "InterpretedFunction") == interpreted:
                    found.append(name)
                break
    return found


def _triton_compiles() -> bool:
    """True when triton was already imported in compile mode: its language library (tl.cdiv, tl.sigmoid, ...)
    is then made of compiled functions the interpreter cannot call. Calling any torch custom op imports
    triton (through torch._dynamo), so a process that ran the reference model first is in this state."""
    standard = sys.modules.get("triton.language.standard")
    return standard is not None and type(standard.cdiv).__name__ == "JITFunction"


def compiler_available() -> bool:
    """True when the plugin kernels can be compiled in this process: triton is not yet imported, or imported to
    compile, and no kernel module was imported for the interpreter. Otherwise aot.compile_variant compiles in a
    worker process (plugins/compile_worker.py)."""
    standard = sys.modules.get("triton.language.standard")
    interprets = standard is not None and type(standard.cdiv).__name__ == "InterpretedFunction"
    return not interprets and not _kernels_imported(interpreted=True)


def require_interpreter() -> None:
    """Make the plugin kernels run on CPU (Triton interpreter) in this process."""
    compiled = _kernels_imported(interpreted=False)
    if compiled or _triton_compiles():
        raise MixtralTrtError("the plugin kernels can run on CPU only if TRITON_INTERPRET=1 is set before triton is "
                              "first imported, and this process imported it already (calling the reference model "
                              "does): start it with TRITON_INTERPRET=1 (a plugins-cpu engine does this for you: its "
                              "runner is a worker process)")
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def require_compiler() -> None:
    """Make the plugin kernels compile (ahead of time or for the GPU) in this process."""
    interpreted = _kernels_imported(interpreted=True)
    if interpreted:
        raise MixtralTrtError(f"the plugin kernels ({interpreted[0]}) were imported for the CPU interpreter in this "
                              "process; ahead-of-time compilation needs a fresh process")
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def fp32_under_interpreter(*tensors):
    """The tensors as float32 copies when interpreting bf16 (exact: bf16 -> fp32 loses nothing), else as is;
    plus whether the caller should round its result back to bf16."""
    import torch

    if not (interpreting() and any(t.dtype == torch.bfloat16 for t in tensors)):
        return tensors, False
    return tuple(t.float() if t.dtype == torch.bfloat16 else t for t in tensors), True
