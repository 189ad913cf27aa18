"""python -m mixtral_trt.plugins.cpu_kernels [--sanitize] [--force] [--verbose]: build the library."""

from __future__ import annotations

import argparse
import sys

from mixtral_trt.common.errors import MixtralTrtError

from .build import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build the cpu_kernels ONNX Runtime custom-op library")
    parser.add_argument("--sanitize", action="store_true", help="the ASan + UBSan build (_build/sanitize)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--verbose", action="store_true", help="print the compiler commands")
    args = parser.parse_args(argv)
    try:
        print(build("sanitize" if args.sanitize else "release", args.force, args.verbose))
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0



if __name__ == "__main__":
    sys.exit(main())
