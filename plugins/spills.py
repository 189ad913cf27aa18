"""Registers and spills of the AOT kernels, as ptxas assembles the PTX TensorRT gets (`mixtral-export plugins
spills`): per default variant and architecture, `ptxas -v`'s registers per thread, spill stores and loads (bytes
per thread of local memory) and the dynamic shared memory Triton reserves. Every default variant must assemble
without spills (tests/plugins/test_aot.py, check_no_spills): a spill on the decode path is a local-memory round
trip on every K step of every layer of every token."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mixtral_trt.common.progress import bar

from .aot import Usage, assemble, compile_variant, target
from .variant import KernelVariant


@dataclass(frozen=True)
class SpillRow:
    stem: str
    kernel: str
    arch: str
    dtype: str
    tactic: str  # "BMxBNxBK" for the GEMMs, "-" otherwise
    bits: int  # 0 float weights, 8 / 4 quantized, -8 FP8 e4m3 (plugins/f8.py F8_BITS)
    num_warps: int
    num_stages: int
    shared: int  # bytes of dynamic shared memory per CTA
    usage: Usage


def _tile(v: KernelVariant) -> str:
    c = v.constexprs
    return f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']}" if "BLOCK_M" in c else "-"


def _dtype(v: KernelVariant) -> str:
    return next((t[1:] for t in v.signature.values() if t.startswith("*") and t not in ("*i32", "*u8")), "i32")


def measure_one(v: KernelVariant, arch: str, cuda: str | None = None) -> SpillRow:
    """Compile one variant for `arch` (a CUDA `cuda` driver's PTX) and assemble it with ptxas -v."""
    c = compile_variant(v, target(arch, cuda))
    _, usage = assemble(c.ptx, arch)
    return SpillRow(v.stem, v.kernel, arch, _dtype(v), _tile(v), int(v.constexprs.get("BITS", 0)), v.num_warps,
                    v.num_stages, c.shared, usage)


def _measure_args(args: tuple[dict, str, str | None]) -> SpillRow:
    fields, arch, cuda = args
    return measure_one(KernelVariant(**fields), arch, cuda)


def measure(variants: list[KernelVariant], archs: tuple[str, ...], cuda: str | None = None, jobs: int = 2,
            progress=None) -> list[SpillRow]:
    """measure_one for every (variant, arch), over `jobs` processes of their own (Triton compiles or interprets
    per process: these compile), in the order given."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    work = [(asdict(v), arch, cuda) for arch in archs for v in variants]
    interpret = os.environ.pop("TRITON_INTERPRET", None)  # the workers compile, whatever this process does
    try:
        with ProcessPoolExecutor(max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool, \
                bar(progress, f"ptxas -v ({', '.join(archs)})", len(work)) as advance:
            futures = [pool.submit(_measure_args, w) for w in work]
            for f in futures:
                f.add_done_callback(lambda _: advance(1))
            return [f.result() for f in futures]
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret


def spilling(rows: list[SpillRow]) -> list[SpillRow]:
    """The rows that spill, worst first."""
    return sorted((r for r in rows if r.usage.spills), key=lambda r: -r.usage.spills)


def markdown_table(rows: list[SpillRow]) -> str:
    """One line per row: kernel, arch, dtype, weights, tile, warps, stages, registers, spill stores / loads,
    shared memory."""
    lines = ["| kernel | arch | dtype | weights | BM×BN×BK | warps | stages | regs | spill st / ld (B) | smem (B) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        weights = f"int{r.bits}" if r.bits else "float"
        lines.append(f"| {r.kernel.removesuffix('_kernel')} | {r.arch} | {r.dtype} | {weights} | {r.tactic} | "
                     f"{r.num_warps} | {r.num_stages} | {r.usage.registers} | {r.usage.spill_stores} / "
                     f"{r.usage.spill_loads} | {r.shared} |")
    return "\n".join(lines)


def jit_usage(fn) -> list[dict]:
    """Registers and spills of the variants Triton's JIT compiled and loaded for the @triton.jit `fn` in this
    process, as the CUDA driver reports them at load (`CompiledKernel.n_regs`, `n_spills`: local memory bytes per
    thread): the same check on a GPU, for the Triton there. [] where this Triton keeps its kernels elsewhere."""
    rows = []
    for cache in getattr(fn, "device_caches", {}).values():
        kernels = cache[0] if isinstance(cache, tuple) and cache and isinstance(cache[0], dict) else {}
        for k in kernels.values():
            if getattr(k, "n_regs", None) is None:  # compiled, never loaded
                continue
            constants = getattr(getattr(k, "src", None), "constants", {}) or {}
            names, declared = getattr(fn, "arg_names", []), set(getattr(fn, "constexprs", ()))  # constexpr indices
            constexprs = {names[i[0]]: v for i, v in constants.items() if isinstance(i, tuple) and len(i) == 1
                          and i[0] in declared}  # (not the arguments Triton specialised, e.g. an int equal to 1)
            rows.append({"kernel": getattr(fn, "__name__", str(fn)), "constexprs": constexprs,
                         "num_warps": k.metadata.num_warps, "num_stages": k.metadata.num_stages,
                         "shared": k.metadata.shared, "registers": int(k.n_regs), "spills": int(k.n_spills)})
    return rows
