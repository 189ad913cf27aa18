"""`mixtral-export`: thin typer commands over library functions.

Each command lives in its own module and imports heavy backends inside the command body, so `--help`
stays fast. A user error (`MixtralTrtError`) is printed as one line on stderr and exits with code 2;
an I/O failure (disk full, read-only file system) and a failed check (parity beyond tolerance) exit with
code 1; SIGINT and SIGTERM exit with code 130 after cleaning up.
"""

from __future__ import annotations

import signal
import sys
import threading

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.interrupts import Interrupted, raise_interrupted

from . import (  # noqa: F401  (register commands on the app)
    bench_cmd,
    build_cmd,
    chat_cmd,
    device_check_cmd,
    eval_cmd,
    export_cmd,
    generate_cmd,
    gpu_check_cmd,
    init_cmd,
    inspect_cmd,
    parity_cmd,
    plugins_cmd,
    profile_cmd,
    serve_bench_cmd,
    serve_cmd,
)
from .app import app

USER_ERROR_EXIT = 2  # MixtralTrtError.exit_code
IO_ERROR_EXIT = 1
INTERRUPTED_EXIT = 130


def main() -> None:
    """Run the command. A user error prints `error: ...` (one line) and exits 2; an I/O failure (disk full,
    read-only file system) exits 1; SIGINT and SIGTERM clean up (no temporary is left), print
    `error: interrupted` and exit 130."""
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        app(prog_name="mixtral-export")
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except OSError as e:  # an I/O failure outside an atomic output (which turns them into WriteError)
        print(f"error: {str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        raise SystemExit(IO_ERROR_EXIT) from None
    except (Interrupted, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
