"""The PTX TensorRT's AOT plugins receive: which PTX ISA version to write, and the kernel entry TensorRT launches.

TensorRT's AOT plugins take PTX only; the CUDA driver compiles it when the engine loads, and a driver loads
PTX up to the ISA of its own CUDA version. Triton writes the newest ISA its bundled ptxas knows (Triton 3.9:
`.version 9.4`, i.e. CUDA 13.4), which every CUDA 12.x and 13.0-13.3 driver rejects. So the ISA is chosen
from the CUDA version of the driver that will load the plan: the build machine's (cuDriverGetVersion) inside
TensorRT's aot_impl, or the `--cuda` target of `plugins compile`; never above Triton's own, never below what
the architecture needs (Triton's code generation targets ISA <= 9.0 and only the `.version` line changes).

Triton also appends two hidden pointer parameters to every kernel (global and profile scratch). TensorRT
passes exactly the inputs, the scalar arguments and the outputs; when both scratch sizes are 0 the kernel
never reads them, so they are removed from the `.entry` (any other size is an error: TensorRT cannot provide
the buffers). `aot.assemble` re-assembles the result with ptxas.
"""

from __future__ import annotations

import ctypes
import re

from mixtral_trt.common.errors import MixtralTrtError

MIN_PTX = {"sm_80": 70, "sm_90a": 80}  # the first ISA with each target (PTX 7.0: sm_80, 8.0: sm_90a)


def ptx_for_cuda(cuda: str) -> int:
    """The newest PTX ISA a driver of CUDA version `cuda` loads, as Triton spells it: "12.8" -> 87 (ISA 8.7).
    NVIDIA's table: 11.x -> 7.x, 12.0-12.5 -> 8.0-8.5, 12.6 -> 8.5, 12.8 -> 8.7, 12.9 -> 8.8, 13.y -> 9.y
    (the rule of Triton's ptx_get_version; tests compare them)."""
    try:
        major, minor = (int(p) for p in cuda.split(".")[:2])
    except ValueError:
        raise MixtralTrtError(f"--cuda {cuda!r}: expected a CUDA version such as 12.8") from None
    if major == 11:
        return 70 + minor
    if major == 12:
        return 80 + minor - (minor >= 6)
    if major >= 13:
        return 90 + (major - 13) * 10 + minor
    raise MixtralTrtError(f"--cuda {cuda}: CUDA 11 or newer is needed")


def format_ptx(version: int) -> str:
    return f"{version // 10}.{version % 10}"


def driver_cuda_version() -> str | None:
    """CUDA version of the installed NVIDIA driver ("12.8", from libcuda's cuDriverGetVersion), None without one."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def choose_ptx(arch: str, cuda: str | None, triton_default: int | None) -> int | None:
    """The ISA to write for `arch`, loadable by a CUDA `cuda` driver; None: Triton's own (no driver known)."""
    if cuda is None:
        return None
    chosen = ptx_for_cuda(cuda) if triton_default is None else min(triton_default, ptx_for_cuda(cuda))
    if chosen < MIN_PTX.get(arch, 0):
        raise MixtralTrtError(f"a CUDA {cuda} driver loads PTX up to {format_ptx(chosen)}; {arch} needs PTX "
                              f"{format_ptx(MIN_PTX[arch])} or newer: update the NVIDIA driver")
    return chosen


def written_ptx(ptx: str) -> int:
    """The ISA of a PTX text (".version 8.7" -> 87)."""
    found = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", ptx, re.M)
    if found is None:
        raise ValueError("no .version line in the PTX")
    return int(found.group(1)) * 10 + int(found.group(2))


_ENTRY = re.compile(r"(\.visible\s+\.entry\s+(\w+)\s*\()([^)]*)(\))", re.S)


def entry_params(ptx: str) -> tuple[str, list[str]]:
    """(kernel symbol, its .param declarations in order) of the PTX's single `.entry`."""
    found = _ENTRY.findall(ptx)
    if len(found) != 1:
        raise ValueError(f"expected one .entry in the PTX, found {len(found)}")
    _, name, params, _ = found[0]
    return name, [p.strip() for p in params.split(",") if p.strip()]


def strip_scratch_params(ptx: str, n_args: int, scratch_sizes: tuple[int, int]) -> str:
    """Keep the first `n_args` parameters of the entry (inputs, scalars, outputs): Triton's hidden scratch
    pointers after them are removed, which is sound only when the kernel needs no scratch memory."""
    name, params = entry_params(ptx)
    hidden = params[n_args:]
    if not hidden:
        return ptx
    if len(hidden) > 2 or any(scratch_sizes):
        raise MixtralTrtError(f"kernel {name}: {len(hidden)} hidden parameters, scratch sizes (global, profile) "
                              f"{scratch_sizes}; TensorRT's AOT launch passes no scratch buffers")
    kept = ",\n\t".join(params[:n_args])
    return _ENTRY.sub(lambda m: f"{m.group(1)}\n\t{kept}\n{m.group(4)}", ptx, count=1)
