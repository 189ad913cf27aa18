"""The ASGI app: OpenAI- and Mistral-compatible routes over one engine and its Scheduler.

    POST /v1/chat/completions   messages -> reply (JSON, or SSE chunks ending with `data: [DONE]`)
    POST /v1/completions        prompt(s) -> completion(s)
    GET  /v1/models             the engine's name
    GET  /health                200 when the scheduler runs
    GET  /metrics               Prometheus text format

This module imports FastAPI: only `serve` imports it, and only when a server is made.
Each request is submitted to the Scheduler, whose thread runs the engine; its tokens come back through
a per-request asyncio queue. A client that disconnects cancels its request (its row leaves the batch at
the next step). Errors use OpenAI's JSON shape: validation 400 (with the runtime's one-line message),
missing or wrong API key 401, full queue 429, shutting down 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.chat import chat_prompt
from mixtral_trt.runtime.chat_completion import ChatRequest, prepare_chat
from mixtral_trt.runtime.scheduler import QueueFull, Scheduler, ShuttingDown

from .metrics import Metrics
from .protocol import ChatCompletionRequest, CompletionRequest, Sampling, param_of
from .responses import DONE, Envelope, error_body, sse, usage
from .ticket import GONE, Ticket, disconnected

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine

@dataclass
class ServerState:
    engine: Engine
    scheduler: Scheduler
    model_name: str
    api_key: str | None
    metrics: Metrics
    created: int


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


def create_app(engine: Engine, scheduler: Scheduler, model_name: str | None = None,
               api_key: str | None = None) -> FastAPI:
    """The FastAPI app; the caller starts and stops `scheduler` (see `server.serve`), or the app does
    it in its lifespan when the scheduler is not running yet."""
    state = ServerState(engine, scheduler, model_name or engine.path.name, api_key, Metrics(scheduler),
                        int(time.time()))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = not scheduler.alive
        if owned:
            scheduler.start()
        yield
        if owned:  # in-flight requests are over (uvicorn waited for them, or cancelled them)
            await asyncio.to_thread(scheduler.shutdown, 0.0)

    app = FastAPI(title="mixtral-trt", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state

    def error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
        state.metrics.errors.labels(str(status)).inc()
        return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)

    @app.exception_handler(HTTPError)
    async def _http_error(_: HttpRequest, e: HTTPError) -> JSONResponse:
        return error(e.status, e.message, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HttpRequest, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", where or None)

    def check_key(http: HttpRequest) -> None:
        """A dependency of every /v1 route: it runs before the body is validated, so 401 comes first."""
        if state.api_key is None:
            return
        scheme, _, key = http.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip(), state.api_key):
            raise HTTPError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                            headers={"WWW-Authenticate": "Bearer"})

    keyed = [Depends(check_key)]

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": "ok" if scheduler.alive else "stopped", "running": scheduler.running,
                "waiting": scheduler.waiting}
        return JSONResponse(body, status_code=200 if scheduler.alive else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/models", dependencies=keyed)
    async def models() -> dict[str, Any]:
        card = {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "mixtral-trt",
                "max_model_len": engine.max_seq}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat_completions(body: ChatCompletionRequest, http: HttpRequest):
        try:
            body.check_unsupported()
            if body.wants_tools:  # tools in the prompt; a grammar for forced calls or JSON output
                chat = prepare_chat(engine.tokenizer, body.chat_messages(), body.tools, body.tool_choice,
                                    body.response_format, body.safe_prompt, body.parallel_tool_calls is not False)
                prompt = chat.prompt
            else:
                chat, prompt = None, chat_prompt(engine.tokenizer, body.chat_messages(), safe_mode=body.safe_prompt)
        except MixtralTrtError as e:
            raise HTTPError(400, str(e), param_of(e)) from None
        return await respond(http, body, [prompt], Envelope("chat", state.model_name), body.max_new_tokens, chat)

    @app.post("/v1/completions", dependencies=keyed)
    async def completions(body: CompletionRequest, http: HttpRequest):
        try:
            body.check_unsupported()
            prompts = [engine.tokenizer.encode(p) if isinstance(p, str) else p for p in body.prompts()]
        except MixtralTrtError as e:
            raise HTTPError(400, str(e), param_of(e)) from None
        return await respond(http, body, prompts, Envelope("completion", state.model_name), body.max_new_tokens)

    async def respond(http: HttpRequest, body: Sampling, prompts: list[list[int]], envelope: Envelope,
                      max_new_tokens: int | None, chat: ChatRequest | None = None):
        endpoint = "chat" if envelope.chat else "completions"
        tickets: list[Ticket] = []
        try:
            for prompt in _validated(prompts, envelope, max_new_tokens):
                tickets.append(submit(prompt, body, max_new_tokens, endpoint, chat))
        except HTTPError:
            for ticket in tickets:  # a later prompt was refused: the earlier ones go too
                ticket.cancel()
            raise
        if body.stream:
            return StreamingResponse(stream(http, tickets, envelope, body.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        watcher = asyncio.ensure_future(disconnected(http))
        try:
            for ticket in tickets:
                while not ticket.over:
                    if await ticket.next_events(watcher) is GONE:
                        return JSONResponse(error_body(499, "client disconnected"), status_code=499)
        finally:
            watcher.cancel()
            for ticket in tickets:
                ticket.cancel()
        failed = [t.request.error for t in tickets if t.request.status == "failed"]
        if failed:
            raise HTTPError(500, failed[0])
        return envelope.body([t.request.completion() for t in tickets], [t.outcome() for t in tickets])

    def _validated(prompts: list[list[int]], envelope: Envelope, max_new_tokens: int | None) -> list[list[int]]:
        """Without max_tokens a reply may use the rest of the context: there must be some."""
        for n, p in enumerate(prompts):
            if len(p) >= engine.max_seq and max_new_tokens is None:
                where = f"prompt {n}" if len(prompts) > 1 else "prompt"
                raise HTTPError(400, f"{where}: {len(p)} tokens leave no room in the engine's context of "
                                     f"{engine.max_seq} tokens", "messages" if envelope.chat else "prompt")
        return prompts

    def submit(prompt: list[int], body: Sampling, max_new_tokens: int | None, endpoint: str,
               chat: ChatRequest | None) -> Ticket:
        loop = asyncio.get_running_loop()
        ticket = Ticket(loop, state.metrics, chat)
        try:
            params = body.sampling_params(max_new_tokens if max_new_tokens is not None
                                          else engine.max_seq - len(prompt))
            constraint = chat.constraint() if chat is not None and chat.constraint is not None else None
            ticket.request = scheduler.submit(prompt, params, tokenizer=engine.tokenizer, constraint=constraint,
                                              on_event=ticket.on_event, on_done=ticket.on_done)
        except QueueFull as e:
            raise HTTPError(429, str(e), headers={"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise HTTPError(503, str(e)) from None
        except MixtralTrtError as e:
            raise HTTPError(400, str(e), param_of(e)) from None
        state.metrics.requests.labels(endpoint).inc()
        return ticket

    async def stream(http: HttpRequest, tickets: list[Ticket], envelope: Envelope,
                     include_usage: bool) -> AsyncIterator[bytes]:
        watcher = asyncio.ensure_future(disconnected(http))
        try:
            for index, ticket in enumerate(tickets):
                if envelope.chat:
                    yield sse(envelope.chunk(index, "", role=True, include_usage=include_usage))
                while not ticket.over:
                    events = await ticket.next_events(watcher)
                    if events is GONE:
                        return
                    # the tokens that arrived since the last write go out as one chunk (one per token
                    # while the loop keeps up; fewer, longer ones when it falls behind); a reply of tool
                    # calls is held back and sent parsed at the end
                    text = "" if ticket.holding else "".join(e.text for e in events)
                    finish = next((e.finish_reason for e in events if e.finish_reason), None)
                    if finish is None:
                        if text:
                            yield sse(envelope.chunk(index, text, include_usage=include_usage))
                        continue
                    request, out = ticket.request, ticket.outcome()
                    if ticket.holding:
                        text = out.content
                    used = usage(request.reply.prompt_tokens, len(request.reply.token_ids))
                    yield sse(envelope.chunk(index, text or None, out.finish_reason,
                                             used=None if include_usage else used, include_usage=include_usage,
                                             tool_calls=out.tool_calls))
                if ticket.request.status == "failed":
                    yield sse(error_body(500, ticket.request.error or "engine failure"))
                    return
            if include_usage:
                reqs = [t.request for t in tickets]
                yield sse(envelope.usage_chunk(usage(sum(r.reply.prompt_tokens for r in reqs),
                                                     sum(len(r.reply.token_ids) for r in reqs))))
            yield DONE
        finally:
            watcher.cancel()
            for ticket in tickets:
                ticket.cancel()

    return app
