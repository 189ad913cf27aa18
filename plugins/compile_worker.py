"""`python -m mixtral_trt.plugins.compile_worker`: compile kernel variants in a process of its own, for a process
whose Triton interprets (Triton compiles or interprets per process, decided when it is first imported: a test
session that runs the kernels on CPU, then builds a TensorRT engine). Reads a JSON request on stdin:
{"target": {...} or null (this machine's GPU and driver), "variants": [KernelVariant fields, ...]}; writes a
JSON answer on stdout: {"target": {...}, "compiled": [{name, ptx, num_warps, shared, ptx_version}, ...]} or
{"error": "..."}."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from mixtral_trt.common.errors import MixtralTrtError


def main() -> int:
    from .aot import Target, compile_variant, target
    from .variant import KernelVariant

    request = json.loads(sys.stdin.read())
    try:
        where = Target(**request["target"]) if request["target"] else target()
        compiled = [compile_variant(KernelVariant(**v), where) for v in request["variants"]]
    except MixtralTrtError as e:
        print(json.dumps({"error": str(e)}))
        return 2
    print(json.dumps({"target": asdict(where), "compiled": [
        {"name": c.name, "ptx": c.ptx, "num_warps": c.num_warps, "shared": c.shared, "ptx_version": c.ptx_version}
        for c in compiled]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
