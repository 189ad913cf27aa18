"""Serving helpers for tests: the app on a free port of 127.0.0.1 in a thread of the test process, the
real `openai` and `mistralai` clients pointed at it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

API_KEY = "sk-test-0123456789"
MODEL = "tiny-mixtral"


@dataclass
class Served:
    url: str
    app: object
    engine: object
    scheduler: object
    server: object  # the BackgroundServer: `.server.should_exit = True` starts a graceful shutdown


@contextlib.contextmanager
def start(engine, max_batch: int | None = None, max_queue: int = 64, grace: float = 5.0, **options):
    """The app with its own Scheduler over `engine`, served until the block ends."""
    from mixtral_trt.runtime.scheduler import Scheduler
    from mixtral_trt.serve.app import create_app
    from mixtral_trt.serve.server import BackgroundServer

    scheduler = Scheduler(engine, max_batch=max_batch, max_queue=max_queue)
    app = create_app(engine, scheduler, model_name=MODEL, **options)
    background = BackgroundServer(app, grace=grace)
    with background as url:
        yield Served(url, app, engine, scheduler, background)


def openai_client(url: str, key: str | None = API_KEY):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key=key or "none", max_retries=0, timeout=60)


def mistral_client(url: str, key: str = API_KEY):
    try:
        from mistralai.client import Mistral  # mistralai >= 2
    except ImportError:
        from mistralai import Mistral

    return Mistral(api_key=key, server_url=url)


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
