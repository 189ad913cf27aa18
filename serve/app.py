"""The ASGI app: OpenAI- and Mistral-compatible routes over one engine and its Scheduler.

    POST /v1/chat/completions   messages -> reply (JSON, or SSE chunks ending with `data: [DONE]`)
    POST /v1/completions        prompt(s) -> completion(s)
    GET  /v1/models             the engine's name
    GET  /health                200 when the scheduler runs
    GET  /metrics               Prometheus text format

This module imports FastAPI: only `serve` imports it, and only when a server is made. The routes are a
thin table over `Serving` (serving.py), which handles the requests; `Gate` (gate.py) checks the API key
and reads the body before any route runs. Every error, the framework's own (404, 405) included, is
OpenAI's JSON shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .gate import Gate
from .limits import Limits
from .serving import HTTPError, JSONReply, Serving, StreamReply
from .ticket import disconnected

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine
    from mixtral_trt.runtime.scheduler import Scheduler


def create_app(engine: Engine, scheduler: Scheduler, model_name: str | None = None,
               api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app; the caller starts and stops `scheduler` (see `server.serve`), or the app does
    it in its lifespan when the scheduler is not running yet. `app.state.serving` is its `Serving`."""
    serving = Serving(engine, scheduler, model_name or engine.path.name, int(time.time()), limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = not scheduler.alive
        if owned:
            scheduler.start()
        yield
        if owned:  # in-flight requests are over (uvicorn waited for them, or cancelled them)
            await asyncio.to_thread(scheduler.shutdown, 0.0)

    app = FastAPI(title="mixtral-trt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = serving
    app.add_middleware(Gate, serving=serving, api_key=api_key)

    @app.exception_handler(HTTPError)
    async def _refused(_: HttpRequest, e: HTTPError) -> Response:
        return render(serving.error(e.status, e.message, e.param, e.headers))

    @app.exception_handler(StarletteHTTPException)
    async def _framework(http: HttpRequest, e: StarletteHTTPException) -> Response:
        message = f"{http.method} {http.url.path}: {e.detail}"  # 404 Not Found, 405 Method Not Allowed
        return render(serving.error(e.status_code, message, None, dict(e.headers or {})))

    @app.get("/health")
    async def health() -> Response:
        return render(serving.health())

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(serving.metrics.render(), media_type=serving.metrics.content_type)

    @app.get("/v1/models")
    async def models() -> Response:
        return render(serving.models())

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HttpRequest) -> Response:
        return render(await serving.chat(await http.body(), lambda: disconnected(http)))

    @app.post("/v1/completions")
    async def completions(http: HttpRequest) -> Response:
        return render(await serving.completions(await http.body(), lambda: disconnected(http)))

    return app


def render(reply: JSONReply | StreamReply) -> Response:
    if isinstance(reply, StreamReply):
        return StreamingResponse(reply.chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers or None)
