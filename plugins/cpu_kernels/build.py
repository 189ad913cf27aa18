"""Compile the cpu_kernels library (C++17, g++ or $CXX) against ONNX Runtime's C API headers.

    python -m mixtral_trt.plugins.cpu_kernels [--sanitize] [--force]   (__main__.py)

Headers: $ORT_INCLUDE_DIR, else fetch_headers.sh (Debian trixie's libonnxruntime-dev through a private apt
directory, cached under ~/.cache/mixtral-trt/ort-headers). Each kernels_<isa>.cc gets its own -m flags; the
rest is baseline x86-64, so the library loads on any x86-64 CPU and picks its kernels at run time (isa.cc).
The output lands in `_build/<variant>/` beside this file (gitignored); a build is skipped when the sources,
flags and headers are those of the last one.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mixtral_trt.common.errors import MixtralTrtError

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
LIBRARY = "libmixtral_cpu_kernels.so"
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma"]
ISA_FLAGS = {
    "kernels_avx512.cc": AVX512,
    "kernels_avx512bf16.cc": [*AVX512, "-mavx512bf16"],
    "kernels_amx.cc": [*AVX512, "-mavx512bf16", "-mamx-tile", "-mamx-bf16"],
    "kernels_amx_int8.cc": [*AVX512, "-mamx-tile", "-mamx-int8"],
    "kernels_avx2.cc": ["-mavx2", "-mfma"],
    "kernels_portable.cc": ["-ffp-contract=off"],
}
VARIANTS = {
    "release": ["-O3", "-DNDEBUG"],
    # AddressSanitizer + UndefinedBehaviorSanitizer: run under LD_PRELOAD=$(g++ -print-file-name=libasan.so)
    "sanitize": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
}
COMMON = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def output_dir(variant: str = "release") -> Path:
    return HERE / "_build" / variant


def include_dir() -> Path:
    """ONNX Runtime's headers: $ORT_INCLUDE_DIR, or the fetched Debian package (one-line error if neither)."""
    done = subprocess.run(["sh", str(HERE / "fetch_headers.sh")], capture_output=True, text=True)
    if done.returncode:
        detail = " ".join(done.stderr.split())[-300:]
        raise MixtralTrtError(f"cpu_kernels: no ONNX Runtime headers ({detail}); set ORT_INCLUDE_DIR to ONNX Runtime "
                              ">= 1.21 headers")
    return Path(done.stdout.strip().splitlines()[-1])


def _digest(cxx: str, flags: list[str], include: Path) -> str:
    h = hashlib.sha256(" ".join([cxx, *flags, str(include)]).encode())
    for path in sorted(SRC.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def build(variant: str = "release", force: bool = False, verbose: bool = False) -> Path:
    """Compile (when needed) and return the library's path."""
    if variant not in VARIANTS:
        raise MixtralTrtError(f"cpu_kernels: variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    cxx = os.environ.get("CXX", "g++")
    include = include_dir()
    flags = [*COMMON, *VARIANTS[variant], f"-I{include}"]
    out = output_dir(variant)
    library, stamp = out / LIBRARY, out / "build.sha256"
    digest = _digest(cxx, flags, include)
    if not force and library.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return library
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(SRC.glob("*.cc"))

    def compile_one(source: Path) -> Path:
        obj = out / (source.stem + ".o")
        _run([cxx, *flags, *ISA_FLAGS.get(source.name, []), "-c", str(source), "-o", str(obj)], verbose)
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    tmp = out / (LIBRARY + ".tmp")
    _run([cxx, "-shared", *VARIANTS[variant], "-o", str(tmp), *map(str, objects)], verbose)
    os.replace(tmp, library)
    stamp.write_text(digest + "\n")
    return library


def _run(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print(shlex.join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise MixtralTrtError(f"cpu_kernels: compiling failed: {shlex.join(cmd[:2])} ... (compiler output above)")
