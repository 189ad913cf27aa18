"""Ahead-of-time compilation of the plugin kernels (Triton -> PTX + cubin) for a GPU architecture, without a
GPU. One `KernelVariant` per (kernel, dtype, constexprs); the same description serves `mixtral-export
plugins compile` and the TensorRT `aot_impl` of each plugin (plugins/trt_registry.py), which compiles
for the build GPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir

from .tiles import ALIGN_BLOCK, TACTICS, tile_for

ARCHS = {"sm_90a": 90, "sm_80": 80}
KERNELS_FORMAT = "mixtral-trt.kernels/1"  # kernels.json: --force recognises its own output by it
TRITON_TYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


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


def router_variant(dtype: str, top_k: int, num_experts: int) -> KernelVariant:
    from .moe_router.launch import BLOCK_T, block_e

    return KernelVariant("MoERouter", "moe_router_kernel", "moe_router",
                         {"logits_ptr": f"*{TRITON_TYPES[dtype]}", "T": "i32", "E": "i32", "weights_ptr": "*fp32",
                          "experts_ptr": "*i32", "K": "constexpr", "BLOCK_T": "constexpr", "BLOCK_E": "constexpr"},
                         {"K": top_k, "BLOCK_T": BLOCK_T, "BLOCK_E": block_e(num_experts)})


def align_variant(num_experts: int, block_size: int = ALIGN_BLOCK) -> KernelVariant:
    from .moe_align.launch import BLOCK_P, block_e

    return KernelVariant("MoEAlign", "moe_align_kernel", "moe_align",
                         {"experts_ptr": "*i32", "P": "i32", "E": "i32", "M_MAX": "i32", "NUM_BLOCKS": "i32",
                          "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
                          "BLOCK": "constexpr", "BLOCK_P": "constexpr", "BLOCK_E": "constexpr"},
                         {"BLOCK": block_size, "BLOCK_P": BLOCK_P, "BLOCK_E": block_e(num_experts)})


def gemm_swiglu_variant(dtype: str, top_k: int, tactic: int, block_size: int = ALIGN_BLOCK,
                        quantized: bool = False) -> KernelVariant:
    t, tile = f"*{TRITON_TYPES[dtype]}", tile_for(tactic, dtype, quantized)
    return KernelVariant("MoEGemmSwiGLU", "moe_gemm_swiglu_kernel", "moe_gemm_swiglu",
                         {"x_ptr": t, "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
                          "w13_ptr": t, "H": "i32", "INTER": "i32", "P": "i32", "inter_ptr": t, "TOP_K": "constexpr",
                          "ALIGN": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
                          "BLOCK_K": "constexpr", "IEEE": "constexpr"},
                         {"TOP_K": top_k, "ALIGN": block_size, "BLOCK_M": tile.block_m, "BLOCK_N": tile.block_n,
                          "BLOCK_K": tile.block_k, "IEEE": dtype == "fp32"}, tile.num_warps, tile.num_stages)


def gemm_down_variant(dtype: str, tactic: int, block_size: int = ALIGN_BLOCK, quantized: bool = False
                      ) -> KernelVariant:
    t, tile = f"*{TRITON_TYPES[dtype]}", tile_for(tactic, dtype, quantized)
    return KernelVariant("MoEGemmDown", "moe_gemm_down_kernel", "moe_gemm_down",
                         {"inter_ptr": t, "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
                          "weights_ptr": "*fp32", "w2_ptr": t, "H": "i32", "INTER": "i32", "P": "i32", "y_ptr": "*fp32",
                          "ALIGN": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
                          "BLOCK_K": "constexpr", "IEEE": "constexpr"},
                         {"ALIGN": block_size, "BLOCK_M": tile.block_m, "BLOCK_N": tile.block_n,
                          "BLOCK_K": tile.block_k, "IEEE": dtype == "fp32"}, tile.num_warps, tile.num_stages)


def gemm_swiglu_q_variant(dtype: str, top_k: int, tactic: int, bits: int, group: int,
                          block_size: int = ALIGN_BLOCK) -> KernelVariant:
    base = gemm_swiglu_variant(dtype, top_k, tactic, block_size, quantized=True)
    ordered = {"x_ptr": base.signature["x_ptr"], "sorted_ptr": "*i32", "block_experts_ptr": "*i32",
               "num_padded_ptr": "*i32", "codes_ptr": "*u8", "scales_ptr": base.signature["x_ptr"], "H": "i32",
               "INTER": "i32", "P": "i32", "inter_ptr": base.signature["x_ptr"]}
    ordered.update({k: "constexpr" for k in (*base.constexprs, "BITS", "GROUP")})
    return KernelVariant("MoEGemmSwiGLUQ", "moe_gemm_swiglu_q_kernel", "moe_gemm_swiglu_q", ordered,
                         {**base.constexprs, "BITS": bits, "GROUP": group}, base.num_warps, base.num_stages)


def gemm_down_q_variant(dtype: str, tactic: int, bits: int, group: int, block_size: int = ALIGN_BLOCK
                        ) -> KernelVariant:
    base = gemm_down_variant(dtype, tactic, block_size, quantized=True)
    t = base.signature["inter_ptr"]
    ordered = {"inter_ptr": t, "sorted_ptr": "*i32", "block_experts_ptr": "*i32", "num_padded_ptr": "*i32",
               "weights_ptr": "*fp32", "codes_ptr": "*u8", "scales_ptr": t, "H": "i32", "INTER": "i32", "P": "i32",
               "y_ptr": "*fp32"}
    ordered.update({k: "constexpr" for k in (*base.constexprs, "BITS", "GROUP")})
    return KernelVariant("MoEGemmDownQ", "moe_gemm_down_q_kernel", "moe_gemm_down_q", ordered,
                         {**base.constexprs, "BITS": bits, "GROUP": group}, base.num_warps, base.num_stages)


def default_variants(dtypes: tuple[str, ...] = ("fp16", "bf16", "fp32"), top_k: int = 2, num_experts: int = 8
                     ) -> list[KernelVariant]:
    """Mixtral's routing (8 experts, top-2): every kernel, dtype and GEMM tactic, and the quantized GEMMs
    for int8 per-channel and int4 in blocks of 32 (Mixtral 8x7B's H = 4096, I = 14336 as the groups)."""
    out = [align_variant(num_experts)]
    for dtype in dtypes:
        out.append(router_variant(dtype, top_k, num_experts))
        for tactic in TACTICS:
            out += [gemm_swiglu_variant(dtype, top_k, tactic), gemm_down_variant(dtype, tactic)]
            for bits, swiglu_group, down_group in ((8, 4096, 14336), (4, 32, 32)):
                out += [gemm_swiglu_q_variant(dtype, top_k, tactic, bits, swiglu_group),
                        gemm_down_q_variant(dtype, tactic, bits, down_group)]
    return out


@dataclass(frozen=True)
class Compiled:
    name: str  # kernel symbol in the PTX / cubin
    ptx: str
    cubin: bytes | None
    num_warps: int
    shared: int  # bytes of dynamic shared memory


def compile_variant(v: KernelVariant, arch: str | None = None) -> Compiled:
    """Compile for `arch` (sm_90a / sm_80), or for the current GPU when None (TensorRT's aot_impl)."""
    import importlib

    from .interpreter import require_compiler

    require_compiler()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(f"mixtral_trt.plugins.{v.folder}.kernel"), v.kernel)
    src = ASTSource(fn=fn, signature=dict(v.signature), constexprs=dict(v.constexprs))
    options = {"num_warps": v.num_warps, "num_stages": v.num_stages}
    target = None if arch is None else GPUTarget("cuda", ARCHS[arch], 32)
    kernel = triton.compile(src, target=target, options=options)
    return Compiled(kernel.metadata.name, kernel.asm["ptx"], kernel.asm.get("cubin"), kernel.metadata.num_warps,
                    kernel.metadata.shared)


def compile_all(arch: str, out_dir: str | Path, variants: list[KernelVariant] | None = None,
                overwrite: bool = False, progress=None) -> list[Path]:
    """Write `<stem>.ptx` and `<stem>.cubin` per variant plus `kernels.json` (name, signature, constexprs,
    warps, shared memory, target) into out_dir; returns the PTX paths."""
    from mixtral_trt.common.progress import bar

    if arch not in ARCHS:
        raise MixtralTrtError(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    variants = variants or default_variants()
    index, ptx_paths = [], []
    with atomic_dir(out_dir, overwrite) as tmp, bar(progress, f"compile kernels for {arch}", len(variants)) as advance:
        for v in variants:
            c = compile_variant(v, arch)
            (tmp / f"{v.stem}.ptx").write_text(c.ptx)
            if c.cubin:
                (tmp / f"{v.stem}.cubin").write_bytes(c.cubin)
            target = next((line.split()[1] for line in c.ptx.splitlines() if line.startswith(".target")), None)
            index.append({**asdict(v), "stem": v.stem, "symbol": c.name, "num_warps": c.num_warps,
                          "shared_bytes": c.shared, "target": target, "cubin": bool(c.cubin)})
            ptx_paths.append(Path(out_dir) / f"{v.stem}.ptx")
            advance(1)
        (tmp / "kernels.json").write_text(json.dumps({"format": KERNELS_FORMAT, "arch": arch, "kernels": index},
                                                     indent=2) + "\n")
    return ptx_paths
