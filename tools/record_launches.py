"""`python tools/record_launches.py --out DIR [--force]` (`make device-check-launches`): record what TensorRT's
plugin layer gives for every plugin variant into DIR/launches.json + DIR/ptx/ (tests/support/launch_record.py),
on a CPU machine with the dev extra (tensorrt-rtx-cu13 and tensorrt-cu13-bindings), compiling the PTX for sm_90a
and a CUDA 13.0 driver. The device check's phase 3 replays it on a GPU without TensorRT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    from mixtral_trt.common.errors import MixtralTrtError
    from support.launch_record import record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="device-check-launches")
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("--cuda", default="13.0", help="CUDA version of the driver that will load the PTX")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    try:
        document = record(args.out, args.arch, args.cuda, overwrite=args.force)
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"wrote {args.out}: {len(document['kernels'])} kernels, {len(document['layers'])} layer variants, "
          f"{size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
