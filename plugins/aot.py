"""Ahead-of-time compilation of the plugin kernels (Triton -> PTX + cubin) for a GPU architecture, without a
GPU. One `KernelVariant` (variant.py) per (kernel, dtype, constexprs), described by each plugin's aot.py; the
same description serves `mixtral-export plugins compile` and the TensorRT `aot_impl` of each plugin
(plugins/<folder>/trt.py), which compiles for the build GPU.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir
from mixtral_trt.common.progress import bar

from . import PLUGINS, ptx
from .interpreter import compiler_available, require_compiler
from .variant import KernelVariant

ARCHS = {"sm_90a": 90, "sm_80": 80}
# The launch contract TensorRT's AOT launch gives the kernels, told to Triton as `tt.divisibility` hints (what its
# JIT infers from live arguments): every buffer 16-byte aligned (TensorRT's allocations are 256-byte aligned),
# and the hidden and intermediate sizes multiples of 16 (checked at export and build: check_aligned_sizes).
# Without them the GEMMs load element by element and never pipeline (cp.async).
ALIGNED_SCALARS = ("H", "INTER")
ALIGNMENT = 16
# TensorRT's AOT launch has no opt-in to more than the default dynamic shared memory: every variant fits it.
MAX_SHARED = 48 * 1024
KERNELS_FORMAT = "mixtral-trt.kernels/1"  # kernels.json: --force recognises its own output by it


def default_variants(dtypes: tuple[str, ...] = ("fp16", "bf16", "fp32"), top_k: int = 2, num_experts: int = 8
                     ) -> list[KernelVariant]:
    """Mixtral's routing (8 experts, top-2): every plugin's kernels (its aot.py's `defaults`) in every dtype and
    GEMM tactic, the quantized GEMMs for int8 and int4 in export --quantize's default blocks (32 inputs per scale)."""
    return [v for spec in PLUGINS.values() for v in spec.module("aot").defaults(dtypes, top_k, num_experts)]


def alignment_attrs(fn, signature: dict[str, str]) -> dict[tuple[int], list[list]]:
    """Triton's ASTSource attrs: tt.divisibility 16 on every pointer and on H and INTER (keyed by argument index)."""
    return {(fn.arg_names.index(name),): [["tt.divisibility", ALIGNMENT]] for name, kind in signature.items()
            if kind.startswith("*") or name in ALIGNED_SCALARS}


def check_aligned_sizes(hidden: int, inter: int, where: str) -> None:
    """The AOT kernels assume H and I are multiples of 16 (alignment_attrs): a one-line error otherwise."""
    for name, size in (("hidden_size", hidden), ("intermediate_size", inter)):
        if size % ALIGNMENT:
            raise MixtralTrtError(f"{where}: {name} {size} is not a multiple of {ALIGNMENT}, which the TensorRT "
                                  "plugin kernels need (16-byte aligned rows for vector and async loads)")


def check_shared(name: str, shared: int) -> None:
    if shared > MAX_SHARED:
        raise MixtralTrtError(f"kernel {name}: {shared} B of shared memory, above the {MAX_SHARED} B TensorRT's AOT "
                              "launch gives; choose smaller tiles or fewer stages (plugins/tiles.py)")


@dataclass(frozen=True)
class Compiled:
    name: str  # kernel symbol in the PTX / cubin
    ptx: str  # its .entry takes exactly the signature's runtime arguments (Triton's scratch parameters removed)
    cubin: bytes | None  # Triton's, from the PTX before the scratch parameters were removed (see `assemble`)
    num_warps: int
    shared: int  # bytes of dynamic shared memory
    ptx_version: int  # the ISA written: 87 = ".version 8.7"


@dataclass(frozen=True)
class Target:
    """What a compile is for: an architecture and the CUDA version of the driver that will load the PTX."""

    arch: str  # "sm_90a"
    capability: int  # 90
    cuda: str | None  # "12.8"; None: unknown, Triton's newest PTX
    ptx_version: int | None  # the ISA to write; None: Triton's default

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "cuda": self.cuda,
                "ptx_version": None if self.ptx_version is None else ptx.format_ptx(self.ptx_version)}


def _triton_ptx_isa(capability: int) -> int | None:
    """The ISA Triton writes by default for this capability (the CUDA version of its bundled ptxas)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return ptx.ptx_for_cuda(get_ptxas(capability).version)
    except Exception:  # Triton's internals moved: no cap (ptxas then rejects a too-new ISA itself)
        return None


def target(arch: str | None = None, cuda: str | None = None) -> Target:
    """`arch` (sm_90a / sm_80) for a CUDA `cuda` driver (None: this machine's, if any); `arch` None: this
    machine's GPU and driver (TensorRT's aot_impl, which compiles for the build GPU)."""
    if arch is None:
        import triton

        capability = triton.runtime.driver.active.get_current_target().arch
        arch = f"sm_{capability}{'a' if capability >= 90 else ''}"
    elif arch not in ARCHS:
        raise MixtralTrtError(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    else:
        capability = ARCHS[arch]
    cuda = cuda or ptx.driver_cuda_version()
    return Target(arch, capability, cuda, ptx.choose_ptx(arch, cuda, _triton_ptx_isa(capability)))


def _check_launchable(name: str, metadata) -> None:
    """TensorRT's AOT launch is a plain launch of one-CTA clusters (scratch: ptx.strip_scratch_params)."""
    expected = {"num_ctas": 1, "launch_cooperative_grid": False, "launch_pdl": False}
    bad = {k: getattr(metadata, k) for k, want in expected.items() if getattr(metadata, k, want) != want}
    if bad:
        raise MixtralTrtError(f"kernel {name}: {bad}; TensorRT's AOT launch supports none of these")


def compile_in_worker(variants: list[KernelVariant], where: Target | None) -> tuple[Target, list[Compiled]]:
    """Compile in a process of its own (plugins/compile_worker.py), for a process whose Triton interprets;
    `where` None: that process's GPU and driver. Returns the target and the compiled variants (no cubin)."""
    import os
    import subprocess
    import sys

    request = json.dumps({"target": None if where is None else asdict(where),
                          "variants": [asdict(v) for v in variants]})
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "mixtral_trt.plugins.compile_worker"], input=request,
                            capture_output=True, text=True, env=env)
    lines = result.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines else {}
    if "error" in answer:
        raise MixtralTrtError(answer["error"])
    if result.returncode or "compiled" not in answer:
        raise RuntimeError(f"the kernel compile worker failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return Target(**answer["target"]), [Compiled(c["name"], c["ptx"], None, c["num_warps"], c["shared"],
                                                 c["ptx_version"]) for c in answer["compiled"]]


_FROM_WORKER: dict[tuple[str, Target | None], Compiled] = {}


def build_target() -> Target:
    """This machine's GPU and driver, what TensorRT's aot_impl compiles for (asked of a worker where this
    process's Triton interprets)."""
    return target() if compiler_available() else compile_in_worker([], None)[0]


def compile_variant(v: KernelVariant, where: Target | None = None) -> Compiled:
    """Compile for `where` (default: this machine's GPU and driver, which is what TensorRT's aot_impl needs), in
    this process, or in a worker when this process's Triton interprets (each variant once)."""
    import importlib

    if not compiler_available():
        key = (v.stem, where)
        if key not in _FROM_WORKER:
            _FROM_WORKER[key] = compile_in_worker([v], where)[1][0]
        return _FROM_WORKER[key]
    require_compiler()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    where = where or target()
    fn = getattr(importlib.import_module(f"mixtral_trt.plugins.{v.folder}.kernel"), v.kernel)
    src = ASTSource(fn=fn, signature=dict(v.signature), constexprs=dict(v.constexprs),
                    attrs=alignment_attrs(fn, v.signature))
    options = {"num_warps": v.num_warps, "num_stages": v.num_stages}
    if where.ptx_version is not None:
        options["ptx_version"] = where.ptx_version
    kernel = triton.compile(src, target=GPUTarget("cuda", where.capability, 32), options=options)
    meta = kernel.metadata
    _check_launchable(meta.name, meta)
    check_shared(f"{meta.name} ({v.stem})", meta.shared)
    n_args = sum(t != "constexpr" for t in v.signature.values())
    text = ptx.strip_scratch_params(kernel.asm["ptx"], n_args, (meta.global_scratch_size, meta.profile_scratch_size))
    return Compiled(meta.name, text, kernel.asm.get("cubin"), meta.num_warps, meta.shared, ptx.written_ptx(text))


@dataclass(frozen=True)
class Usage:
    """What ptxas -v reports for one kernel: per thread, registers and the local memory its spills use (a spill
    store or load is a round trip to local memory, i.e. L1/L2/DRAM, on every execution); per CTA, static shared."""

    registers: int
    spill_stores: int  # bytes per thread
    spill_loads: int  # bytes per thread
    stack: int  # bytes of stack frame per thread (spills and local arrays)
    static_shared: int  # bytes (Triton's kernels use dynamic shared memory: usually 0)

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


_USAGE = {"registers": re.compile(r"Used (\d+) registers"), "spill_stores": re.compile(r"(\d+) bytes spill stores"),
          "spill_loads": re.compile(r"(\d+) bytes spill loads"), "stack": re.compile(r"(\d+) bytes stack frame"),
          "static_shared": re.compile(r"(\d+) bytes smem")}


def parse_ptxas_log(log: str) -> Usage:
    """The Usage of the single entry in a `ptxas -v` log (a field ptxas leaves out is 0)."""
    if _USAGE["registers"].search(log) is None:
        raise ValueError(f"no register count in the ptxas log: {log[:300]!r}")
    return Usage(**{k: int(m.group(1)) if (m := rx.search(log)) else 0 for k, rx in _USAGE.items()})


def assemble(ptx_text: str, arch: str) -> tuple[bytes, Usage]:
    """The cubin of `ptx_text` by Triton's bundled ptxas for `arch` (the one Triton itself uses for it), and its
    register and spill figures (`ptxas -v`): proves that the PTX TensorRT gets (scratch parameters removed, ISA
    chosen) is valid for `arch`, and what it costs in registers."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "kernel.ptx", Path(tmp) / "kernel.cubin"
        src.write_text(ptx_text)
        result = subprocess.run([get_ptxas(ARCHS[arch]).path, "-v", f"-arch={arch}", str(src), "-o", str(out)],
                                capture_output=True, text=True)
        if result.returncode:
            raise MixtralTrtError(f"ptxas rejected the PTX for {arch}: {result.stderr.strip()[:500]}")
        return out.read_bytes(), parse_ptxas_log(result.stdout + result.stderr)


def compile_all(arch: str, out_dir: str | Path, variants: list[KernelVariant] | None = None, cuda: str | None = None,
                overwrite: bool = False, progress=None) -> list[Path]:
    """Write `<stem>.ptx` and `<stem>.cubin` (assembled from that PTX) per variant plus `kernels.json` (target,
    CUDA version, PTX version; per kernel: name, signature, constexprs, warps, shared memory, ptxas -v's registers
    and spills) into out_dir;
    returns the PTX paths. `cuda`: the CUDA version of the driver that will load the PTX (default: this
    machine's driver; none found: Triton's newest PTX, which only the newest drivers load)."""
    where = target(arch, cuda)
    variants = variants or default_variants()
    index, ptx_paths = [], []
    with atomic_dir(out_dir, overwrite) as tmp, bar(progress, f"compile kernels for {arch}", len(variants)) as advance:
        for v in variants:
            c = compile_variant(v, where)
            (tmp / f"{v.stem}.ptx").write_text(c.ptx)
            cubin, usage = assemble(c.ptx, arch)
            (tmp / f"{v.stem}.cubin").write_bytes(cubin)
            target_line = next((line.split()[1] for line in c.ptx.splitlines() if line.startswith(".target")), None)
            index.append({**asdict(v), "stem": v.stem, "symbol": c.name, "num_warps": c.num_warps,
                          "shared_bytes": c.shared, "target": target_line, "ptxas": asdict(usage),
                          "ptx_version": ptx.format_ptx(c.ptx_version)})
            ptx_paths.append(Path(out_dir) / f"{v.stem}.ptx")
            advance(1)
        written = {k["ptx_version"] for k in index}
        summary = {**where.describe(), "ptx_version": written.pop() if len(written) == 1 else sorted(written)}
        kernels = {"format": KERNELS_FORMAT, **summary, "kernels": index}
        (tmp / "kernels.json").write_text(json.dumps(kernels, indent=2) + "\n")
    return ptx_paths
