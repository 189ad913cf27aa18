"""What the plugins' TensorRT definitions (plugins/<folder>/trt.py) share: the `aot_impl` return annotation,
dtype names, launch parameters of a compiled kernel variant, torch views of TensorRT's buffers, autotune
combinations and tactics from a plugin's spec and the profile.

No `from __future__ import annotations`: `aot_return` builds an annotation TensorRT's plugin layer inspects.
"""

from typing import Tuple, Union  # noqa: UP035  (see the module docstring)

from . import aot
from .spec import PluginSpec
from .tiles import TACTICS, tactic_for_tokens

TRT_TYPES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16", "i32": "INT32", "u8": "UINT8"}


def autotune_types(spec: PluginSpec) -> str:
    """The spec's I/O dtypes as an AutoTuneCombination string ("FP32|FP16|BF16, INT32, ..."); "like:x" takes
    x's list, and lists of equal length are index-aligned by TensorRT (x FP16 <-> w13 FP16 <-> out FP16)."""
    by_name = {t.name: t.dtypes for t in spec.inputs}
    parts = []
    for tensor in (*spec.inputs, *spec.outputs):
        dtypes = tensor.dtypes
        if len(dtypes) == 1 and dtypes[0].startswith("like:"):
            dtypes = by_name[dtypes[0][5:]]
        parts.append("|".join(TRT_TYPES[d] for d in dtypes))
    return ", ".join(parts)


def aot_return(trtp):
    """aot_impl's return annotation, checked by TensorRT: (kernel name, PTX, launch parameters, scalar arguments)."""
    return Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]  # noqa: UP006, UP007


def dtype_name(trt, dtype) -> str:
    return {trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16"}[dtype]


def constant(expr, what: str) -> int:
    if not expr.is_constant:
        raise ValueError(f"{what} must be a build-time constant")
    return expr.constant_value()


def check_sizes(hidden, inter, plugin: str) -> None:
    """The AOT GEMMs assume H and I multiples of 16 (aot.alignment_attrs): refuse others at build."""
    aot.check_aligned_sizes(constant(hidden, f"{plugin}: H"), constant(inter, f"{plugin}: I"),
                            f"TensorRT plugin {plugin}")


def launch(trtp, variant, grid, extra):
    """(kernel name, PTX, launch parameters, scalar arguments) of a kernel variant compiled for the build GPU."""
    compiled = aot.compile_variant(variant)  # for the GPU the engine is being built on (PTX for its driver)
    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y = grid
    params.block_x = compiled.num_warps * 32
    params.shared_mem = compiled.shared
    args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in extra])
    return compiled.name.encode(), compiled.ptx.encode(), params, args


def torch_stream(stream):
    import torch

    return torch.cuda.stream(torch.cuda.ExternalStream(stream))


def as_torch(*tensors):
    import torch

    return [torch.as_tensor(t, device="cuda") for t in tensors]


def codes_as_bytes(codes):
    """INT32 elements packing the uint8 codes (what the trt lowering stores) -> the uint8 view the kernels read."""
    import torch

    return codes.view(torch.uint8) if codes.dtype == torch.int32 else codes


def profile_tokens(desc) -> int | None:
    """The token count T (dimension 0) of a GEMM input at the profile's opt point (its static size when static);
    None where the plugin layer gives neither."""
    shape = desc.shape
    try:
        tokens = int(shape.opt[0]) if shape.is_dynamic else int(shape[0])
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    return tokens if tokens > 0 else None


def gemm_tactics(tokens: int | None) -> list[int]:
    """One tactic chosen from the profile's T (timing on made-up index data cannot rank them: tiles.tactic_for_tokens),
    every tactic only where T is unknown."""
    return list(TACTICS) if tokens is None else [tactic_for_tokens(tokens)]


def combination(trtp, spec: PluginSpec, tactics: bool, tokens: int | None = None):
    combo = trtp.AutoTuneCombination(autotune_types(spec))
    if tactics:
        combo.tactics(gemm_tactics(tokens))
    return [combo]
