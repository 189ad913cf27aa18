"""`python device_check.py --out OUT`: the device check from a plain checkout, nothing installed (the same as
`PYTHONPATH=tools/pythonpath python -m mixtral_trt.bench.device_check`, or `mixtral-export device-check` where
the package is installed). See bench/device_check/__init__.py."""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent / "tools" / "pythonpath"))
    runpy.run_module("mixtral_trt.bench.device_check", run_name="__main__", alter_sys=True)
