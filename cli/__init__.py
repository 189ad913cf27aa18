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
    init_cmd,
    inspect_cmd,
    parity_cmd,
    plugins_cmd,
    profile_cmd,
)
from .app import app

USER_ERROR_EXIT = 2


def _interpreter_if_needed(argv: list[str]) -> None:
    """Commands that will run plugins-cpu kernels need Triton's interpreter switched on before anything
    imports triton (the reference model does): `bench` with the plugins-cpu backend, and any command given a
    plugins-cpu engine directory. AOT compilation (`plugins compile`) must not have it."""
    import json
    import os
    from pathlib import Path

    if argv[:1] == ["plugins"]:
        return
    backends = "plugins-cpu"  # bench's default list includes it
    for i, arg in enumerate(argv):
        if arg == "--backends" and i + 1 < len(argv):
            backends = argv[i + 1]
        elif arg.startswith("--backends="):
            backends = arg.split("=", 1)[1]
    wanted = argv[:1] == ["bench"] and "plugins-cpu" in backends
    for arg in argv:
        manifest = Path(arg) / "manifest.json"
        try:
            wanted = wanted or json.loads(manifest.read_text()).get("backend") == "plugins-cpu"
        except (OSError, ValueError, AttributeError):
            continue
    if wanted:
        os.environ["TRITON_INTERPRET"] = "1"


def main() -> None:
    from mixtral_trt.common.errors import MixtralTrtError

    _interpreter_if_needed(sys.argv[1:])
    try:
        app(prog_name="mixtral-export")
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
