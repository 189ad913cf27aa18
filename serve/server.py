"""Run the app with uvicorn: `serve(engine_dir, ...)`, which `mixtral-export serve` calls.

Shutdown (Ctrl-C / SIGINT or SIGTERM) is graceful: the listening socket closes, in-flight requests get up to
`grace` seconds to finish, what remains is cancelled (an open stream still ends with a final chunk and
`data: [DONE]`), then the scheduler stops.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.scheduler import DEFAULT, Scheduler

from .limits import Limits


def build(engine_dir: str | Path, *, api_key: str | None = None, max_batch: int | None = None,
          max_queue: int = 64, device: str = "auto", model_name: str | None = None, limits: Limits | None = None,
          expert_load: bool = False, prefix_cache_gb: float | None = None,
          prefill_chunk: int | str | None = DEFAULT):
    """Load the engine, make its Scheduler and the app (not started). `expert_load`: count the tokens routed
    to each expert of each layer (/metrics; the engine needs router outputs, export --debug-outputs).
    `prefix_cache_gb` / `prefill_chunk`: the Scheduler's (runtime/scheduler.py)."""
    from .app import create_app

    engine = runtime.load(engine_dir, device=device)
    engine.tokenizer  # noqa: B018 - fail now, not at the first request, when the engine has no tokenizer
    scheduler = Scheduler(engine, max_batch=max_batch, max_queue=max_queue, expert_load=expert_load,
                          prefix_cache_gb=prefix_cache_gb, prefill_chunk=prefill_chunk)
    return create_app(engine, scheduler, model_name=model_name, api_key=api_key, limits=limits)


def uvicorn_server(app, host: str = "127.0.0.1", port: int = 8000, grace: float = 30.0, log_level: str = "info"):
    """uvicorn over an app of `create_app`, with its header deadline and the clean end of streams on shutdown."""
    try:
        from .uvicorn_server import make_server
    except ImportError:
        raise MixtralTrtError("serving needs the serve extra: pip install 'mixtral-trt[serve]'") from None
    return make_server(app, host, port, grace, log_level, app.state.serving.limits.header_timeout)


def serve(engine_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *, grace: float = 30.0,
          log_level: str = "info", **options) -> None:
    """Serve until interrupted. After the graceful shutdown uvicorn raises again the signal it handled, with
    the handler that was there before: `mixtral-export serve`'s, which exits 130; Python's default, which
    makes Ctrl-C return here normally and SIGTERM end the process by that signal."""
    server = uvicorn_server(build(engine_dir, **options), host, port, grace, log_level)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


class BackgroundServer:
    """The server on a free port of 127.0.0.1, in a thread of this process (tests, benchmarks):

        with BackgroundServer(app) as url: ...   # url = "http://127.0.0.1:PORT"
    """

    def __init__(self, app, grace: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn_server(app, "127.0.0.1", self.port, grace, "warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            self.thread.join(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()
