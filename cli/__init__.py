"""`mixtral-export`: thin typer commands over library functions.

Each command lives in its own module and imports heavy backends inside the command body, so `--help`
stays fast. A user error (`MixtralTrtError`) is printed as one line on stderr and exits with code 2;
a failed check (parity beyond tolerance) exits with code 1.
"""

from __future__ import annotations

import sys

from . import (  # noqa: F401  (register commands on the app)
    bench_cmd,
    build_cmd,
    chat_cmd,
    export_cmd,
    generate_cmd,
    gpu_check_cmd,
    init_cmd,
    inspect_cmd,
    parity_cmd,
    plugins_cmd,
    profile_cmd,
)
from .app import app

USER_ERROR_EXIT = 2


def main() -> None:
    from mixtral_trt.common.errors import MixtralTrtError

    try:
        app(prog_name="mixtral-export")
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
