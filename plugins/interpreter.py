"""Running the plugin kernels on CPU with Triton's interpreter (TRITON_INTERPRET=1).

The variable must be set before `triton` is first imported; `require_interpreter()` sets it, or raises a
clear error when triton was already imported for real GPU compilation in this process. The interpreter's
bf16 `tl.dot` is wrong, so bf16 inputs run as fp32 copies here (outputs cast back to bf16).
"""

from __future__ import annotations

import os
import sys

from mixtral_trt.mixtral_ref.errors import MixtralTrtError


def require_interpreter() -> None:
    if "triton" in sys.modules:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise MixtralTrtError("the plugin kernels can only run on CPU under the Triton interpreter, but triton "
                                  "was already imported without TRITON_INTERPRET=1: run in a fresh process")
        return
    os.environ["TRITON_INTERPRET"] = "1"
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
