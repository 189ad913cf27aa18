"""`python -m mixtral_trt.bench.device_check --out OUT` (argparse only: runs from a plain checkout on a machine
with nothing installed but torch, triton and numpy; see tools/pythonpath/README.md)."""

from __future__ import annotations

import argparse
import json
import sys

from mixtral_trt.common.errors import MixtralTrtError

from .run import PHASES, run_device_check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="device-check", help="directory of device_check.json (+ .png)")
    parser.add_argument("--launches", default=None, help="the launch file's directory (make device-check-launches)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cpu-smoke", action="store_true", default=None, help="CPU stand-ins even with a GPU")
    mode.add_argument("--gpu", dest="cpu_smoke", action="store_false", help="fail unless a GPU is visible")
    parser.add_argument("--phases", default=",".join(map(str, PHASES)), help="e.g. 1,2 (default: all)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all phases (default: 330 on a GPU)")
    args = parser.parse_args(argv)
    try:
        phases = tuple(int(p) for p in args.phases.split(",") if p.strip())
    except ValueError:
        print(f"error: --phases {args.phases!r}: expected numbers such as 1,2", file=sys.stderr)
        return 2
    try:
        report = run_device_check(args.out, args.cpu_smoke, args.launches, phases, args.budget)
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(summary(report))
    return 0 if report["passed"] else 1


def summary(report: dict) -> str:
    lines = [f"device check on {report['machine']} (CPU stand-ins: {', '.join(report['cpu_stand_ins']) or 'none'})"]
    for name, phase in report["phases"].items():
        failed = [c for c in phase["checks"] if not c["passed"]]
        lines.append(f"{phase['status']:>7} {name} ({phase['seconds']} s): {len(phase['checks'])} checks, "
                     f"{len(failed)} failed, {len(phase['skipped'])} skipped"
                     + (f"; {phase['error']}" if "error" in phase else ""))
        lines += [f"          FAIL {c['what']}: {c['value']} (target {c['target']})" for c in failed[:5]]
    lines.append(f"plot: {report['plot']}")
    return "\n".join(lines) + "\n" + json.dumps({"passed": report["passed"]})


if __name__ == "__main__":
    sys.exit(main())
