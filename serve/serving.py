"""The server's request handling, without an HTTP framework: `Serving` over one engine and its Scheduler.

Each endpoint takes the raw request body and a coroutine function that returns when the client has gone,
and answers a `JSONReply` or a `StreamReply` (server-sent event bytes); a refused request raises
`HTTPError` (status, one-line message, the field in `param`). What costs time — JSON parsing, validation,
template rendering, tokenization, grammar compilation, submission — runs on a worker thread, so the event
loop keeps answering everyone else. The app (app.py) is the thin table of routes over it.

On shutdown, `drain(grace)` cancels what is still running once `grace` seconds have passed: every open
stream then ends with a final chunk (`finish_reason: "abort"`) and `data: [DONE]`; a plain request gets 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.chat import chat_prompt
from mixtral_trt.runtime.chat_completion import ChatRequest, prepare_chat
from mixtral_trt.runtime.scheduler import QueueFull, ShuttingDown

from .limits import Limits, depth_of
from .logprobs import ChoiceLogprobs, TokenTexts
from .metrics import Metrics
from .protocol import BadRequest, ChatCompletionRequest, CompletionRequest, Sampling, param_of
from .responses import DONE, Envelope, error_body, sse, usage
from .ticket import GONE, Ticket

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine
    from mixtral_trt.runtime.scheduler import Scheduler

Disconnected = Callable[[], Awaitable[None]]
_TYPES = {"str", "int", "float", "bool", "list", "dict", "none"}  # the members of a union, in pydantic's locations
ABORT = "abort"  # finish_reason of a reply the server cut short on shutdown (vLLM's word)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


@dataclass
class JSONReply:
    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    chunks: AsyncIterator[bytes]  # server-sent events, the last one `data: [DONE]`


@dataclass
class _Admitted:
    """A request past every check, its prompts submitted."""

    body: Sampling
    tickets: list[Ticket]  # prompt k's sample i is tickets[k * n + i] (its choice index)
    envelope: Envelope
    n: int
    prompts: list[list[int]]
    echo: list[str] | None  # completions with echo: each prompt's text

    def prompt_ids(self, index: int) -> list[int]:
        return self.prompts[index // self.n]

    def prompt_tokens(self) -> int:
        """usage.prompt_tokens: each prompt once, however many samples it has."""
        return sum(len(p) for p in self.prompts)


class Serving:
    def __init__(self, engine: Engine, scheduler: Scheduler, model_name: str, created: int,
                 limits: Limits | None = None) -> None:
        self.engine, self.scheduler, self.model_name, self.created = engine, scheduler, model_name, created
        self.limits = limits or Limits()
        self.metrics = Metrics(scheduler)
        self.live: set[Ticket] = set()  # tickets of requests in flight
        self.draining = False

    # ---- endpoints -----------------------------------------------------------------------------------
    def health(self) -> JSONReply:
        alive = self.scheduler.alive and not self.draining
        body = {"status": "ok" if alive else "stopped", "running": self.scheduler.running,
                "waiting": self.scheduler.waiting}
        return JSONReply(body, 200 if alive else 503)

    def models(self) -> JSONReply:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "mixtral-trt",
                "max_model_len": self.engine.max_seq}
        return JSONReply({"object": "list", "data": [card]})

    async def chat(self, raw: bytes, disconnected: Disconnected) -> JSONReply | StreamReply:
        return await self._respond(await self._admit_off_loop(self._admit_chat, raw), disconnected)

    async def completions(self, raw: bytes, disconnected: Disconnected) -> JSONReply | StreamReply:
        return await self._respond(await self._admit_off_loop(self._admit_completions, raw), disconnected)

    def error(self, status: int, message: str, param: str | None = None,
              headers: dict[str, str] | None = None) -> JSONReply:
        """An error reply in OpenAI's shape, counted in the metrics."""
        self.metrics.errors.labels(str(status)).inc()
        return JSONReply(error_body(status, message, param), status, headers or {})

    async def drain(self, grace: float) -> None:
        """Shutdown: after `grace` seconds, cancel every request still in flight (its stream ends cleanly)."""
        self.draining = True
        await asyncio.sleep(grace)
        for ticket in list(self.live):
            ticket.cancel()

    # ---- admission (a worker thread) ---------------------------------------------------------------------
    async def _admit_off_loop(self, admit: Callable[[bytes, asyncio.AbstractEventLoop], _Admitted],
                              raw: bytes) -> _Admitted:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, admit, raw, loop)
        try:
            admitted = await asyncio.shield(work)
        except asyncio.CancelledError:  # the client left while its request was prepared: drop it once submitted
            work.add_done_callback(_cancel_admitted)
            raise
        if self.draining:  # admitted while the server shuts down (a kept-alive connection)
            for ticket in admitted.tickets:
                ticket.cancel()
            raise HTTPError(503, "the server is shutting down")
        self.live.update(admitted.tickets)
        return admitted

    def _admit_chat(self, raw: bytes, loop: asyncio.AbstractEventLoop) -> _Admitted:
        body = self._parse(raw, ChatCompletionRequest)
        max_new = self._checked(body)
        try:
            if body.wants_tools:  # tools in the prompt; a grammar for forced calls or JSON output
                chat = prepare_chat(self.engine.tokenizer, body.chat_messages(), body.tools, body.tool_choice,
                                    body.response_format, body.safe_prompt, body.parallel_tool_calls is not False)
                prompt = chat.prompt
            else:
                chat, prompt = None, chat_prompt(self.engine.tokenizer, body.chat_messages(),
                                                 safe_mode=body.safe_prompt)
        except MixtralTrtError as e:
            raise _bad(e, "messages") from None
        return self._submit(loop, body, [prompt], Envelope("chat", self.model_name), max_new, chat)

    def _admit_completions(self, raw: bytes, loop: asyncio.AbstractEventLoop) -> _Admitted:
        body = self._parse(raw, CompletionRequest)
        max_new = self._checked(body)
        try:
            texts = body.prompts()
            if len(texts) > self.scheduler.max_queue:
                raise BadRequest(f"prompt: {len(texts)} prompts, but the server queues at most "
                                 f"{self.scheduler.max_queue} at once (--max-queue)", "prompt")
            prompts = [self.engine.tokenizer.encode(p) if isinstance(p, str) else p for p in texts]
        except MixtralTrtError as e:
            raise _bad(e, "prompt") from None
        return self._submit(loop, body, prompts, Envelope("completion", self.model_name), max_new, texts=texts)

    def _parse(self, raw: bytes, model: type[Sampling]) -> Any:
        """The body as `model`: 400 for bytes that are not UTF-8 JSON, nesting beyond the limit, or a field
        of the wrong type (named in `param`, as `messages[0].role`)."""
        try:
            value = json.loads(raw)
        except UnicodeDecodeError:
            raise HTTPError(400, "body: not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise HTTPError(400, f"body: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        except RecursionError:
            raise HTTPError(400, f"body: JSON nested deeper than {self.limits.max_depth} levels") from None
        if depth_of(value) > self.limits.max_depth:
            raise HTTPError(400, f"body: JSON nested deeper than {self.limits.max_depth} levels")
        if not isinstance(value, dict):
            raise HTTPError(400, f"body: expected a JSON object, got {type(value).__name__}")
        try:
            return model.model_validate(value)
        except ValidationError as e:
            # the most specific error (a union's members each report one); its field as `messages[0].role`
            first = max(e.errors(), key=lambda error: len(error["loc"]))
            loc = [p for p in first["loc"] if isinstance(p, int) or re.fullmatch(r"[a-z_]+", p) and p not in _TYPES]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            message = first["msg"].removeprefix("Value error, ")
            raise HTTPError(400, f"{where or 'body'}: {message}", where or None) from None

    def _checked(self, body: Sampling) -> int | None:
        """The request's own limits and unsupported fields; its max_tokens."""
        try:
            body.check_unsupported()
            self.limits.check(body)
            return body.max_new_tokens
        except MixtralTrtError as e:
            raise _bad(e) from None

    def _submit(self, loop: asyncio.AbstractEventLoop, body: Sampling, prompts: list[list[int]],
                envelope: Envelope, max_new_tokens: int | None, chat: ChatRequest | None = None,
                texts: list[str | list[int]] | None = None) -> _Admitted:
        """Submit every prompt (`n` samples of each, sharing its prefill), or none: a later refusal cancels the
        earlier ones. `texts`: the prompts as sent (echo gives them back)."""
        endpoint, what = ("chat", "messages") if envelope.chat else ("completions", "prompt")
        try:
            n = body.samples(self.scheduler.max_batch)
        except MixtralTrtError as e:
            raise _bad(e) from None
        tickets: list[Ticket] = []
        try:
            for k, prompt in enumerate(prompts):
                if len(prompt) >= self.engine.max_seq and max_new_tokens is None:
                    where = f"prompt {k}" if len(prompts) > 1 else "prompt"
                    raise HTTPError(400, f"{where}: {len(prompt)} tokens leave no room in the engine's context of "
                                         f"{self.engine.max_seq} tokens", what)
                tickets += self._submit_samples(loop, prompt, body, max_new_tokens, chat, what, n)
        except BaseException:
            for ticket in tickets:
                ticket.cancel()
            raise
        for _ in tickets:
            self.metrics.requests.labels(endpoint).inc()
        echo = None
        if getattr(body, "echo", False):
            echo = [t if isinstance(t, str) else self.engine.tokenizer.decode(t) for t in texts or prompts]
        return _Admitted(body, tickets, envelope, n, prompts, echo)

    def _submit_samples(self, loop: asyncio.AbstractEventLoop, prompt: list[int], body: Sampling,
                        max_new_tokens: int | None, chat: ChatRequest | None, what: str, n: int) -> list[Ticket]:
        """The `n` samples of one prompt (Scheduler.submit_n: one prefill; sample i seeded seed + i)."""
        tickets = [Ticket(loop, self.metrics, chat) for _ in range(n)]
        try:
            params = body.sampling_params(max_new_tokens if max_new_tokens is not None
                                          else self.engine.max_seq - len(prompt))
            constraints = [chat.constraint() if chat is not None and chat.constraint is not None else None
                           for _ in range(n)]
            requests = self.scheduler.submit_n(prompt, params, n, constraints=constraints,
                                               tokenizer=self.engine.tokenizer,
                                               on_event=lambda e: tickets[e.index].on_event(e),
                                               on_done=lambda r: tickets[r.reply.index].on_done(r))
        except QueueFull as e:
            raise HTTPError(429, str(e), headers={"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise HTTPError(503, str(e)) from None
        except MixtralTrtError as e:
            raise _bad(e, what) from None
        for ticket, request in zip(tickets, requests, strict=True):
            ticket.request = request
        return tickets

    # ---- answering (the event loop) --------------------------------------------------------------------
    async def _respond(self, admitted: _Admitted, disconnected: Disconnected) -> JSONReply | StreamReply:
        body, tickets, envelope = admitted.body, admitted.tickets, admitted.envelope
        if body.stream:
            return StreamReply(self._stream(disconnected, admitted))
        watcher = asyncio.ensure_future(disconnected())
        try:
            for ticket in tickets:
                while not ticket.over:
                    if await ticket.next_events(watcher) is GONE:
                        return JSONReply(error_body(499, "client disconnected"), 499)
        finally:
            watcher.cancel()
            self._close(tickets)
        failed = [t.request.error for t in tickets if t.request.status == "failed"]
        if failed:
            raise HTTPError(500, failed[0] or "engine failure")
        if any(t.request.status == "cancelled" for t in tickets):
            raise HTTPError(503, "the server shut down before the reply was finished")
        outcomes, logprobs = [], []
        for index, ticket in enumerate(tickets):
            out, done = ticket.outcome(), ticket.request.completion()
            if admitted.echo is not None:
                out = dataclasses.replace(out, content=admitted.echo[index // admitted.n] + (out.content or ""))
            outcomes.append(out)
            choice = self._logprobs(admitted, index)
            if choice is not None:
                choice.add_prompt(done.prompt_logprobs or [])
                choice.add(done.logprobs or [])
            logprobs.append(None if choice is None else choice.take())
        return JSONReply(envelope.body(outcomes, logprobs, usage(admitted.prompt_tokens(), sum(
            len(t.request.reply.token_ids) for t in tickets))))

    def _logprobs(self, admitted: _Admitted, index: int) -> ChoiceLogprobs | None:
        """Choice `index`'s logprobs collector, None when the request asks for none."""
        if admitted.body.top_logprobs_count() is None:
            return None
        return ChoiceLogprobs(self.token_texts, admitted.envelope.chat, admitted.prompt_ids(index))

    @functools.cached_property
    def token_texts(self) -> TokenTexts:
        return TokenTexts(self.engine.tokenizer)

    async def _stream(self, disconnected: Disconnected, admitted: _Admitted) -> AsyncIterator[bytes]:
        tickets, envelope, include_usage = admitted.tickets, admitted.envelope, admitted.body.include_usage
        watcher = asyncio.ensure_future(disconnected())
        try:
            for index, ticket in enumerate(tickets):
                logprobs = self._logprobs(admitted, index)
                echo = None if admitted.echo is None else admitted.echo[index // admitted.n]
                if envelope.chat:
                    yield sse(envelope.chunk(index, "", role=True, include_usage=include_usage))
                finished = False
                while not ticket.over:
                    events = await ticket.next_events(watcher)
                    if events is GONE:
                        return
                    if echo is not None:  # the prompt is in: its text (and logprobs) come first
                        if logprobs is not None:
                            logprobs.add_prompt(ticket.request.reply.prompt_logprobs or [])
                        yield sse(envelope.chunk(index, echo, include_usage=include_usage,
                                                 logprobs=None if logprobs is None else logprobs.take()))
                        echo = None
                    if logprobs is not None:
                        logprobs.add([e.logprob for e in events])
                    # the tokens that arrived since the last write go out as one chunk (one per token
                    # while the loop keeps up; fewer, longer ones when it falls behind); a reply of tool
                    # calls is held back and sent parsed at the end
                    text = "" if ticket.holding else "".join(e.text for e in events)
                    finish = next((e.finish_reason for e in events if e.finish_reason), None)
                    if finish is None:
                        if text:
                            yield sse(envelope.chunk(index, text, include_usage=include_usage,
                                                     logprobs=None if logprobs is None else logprobs.take()))
                        continue
                    finished = True
                    yield sse(self._last_chunk(ticket, index, envelope, include_usage, text, logprobs))
                request = ticket.request
                if request.status == "failed":
                    yield sse(error_body(500, request.error or "engine failure"))
                    return
                if not finished:  # no token (max_tokens 0), or cancelled (shutdown): what was held back, and why
                    reply = request.reply
                    rest = ticket.outcome().content if ticket.holding else reply.text[reply.emitted:]
                    reason = ABORT if request.status == "cancelled" else reply.finish_reason or "length"
                    yield sse(envelope.chunk(index, rest or None, reason, include_usage=include_usage,
                                             used=None if include_usage else _used(ticket),
                                             logprobs=None if logprobs is None else logprobs.take()))
            if include_usage:
                yield sse(envelope.usage_chunk(usage(admitted.prompt_tokens(), sum(
                    len(t.request.reply.token_ids) for t in tickets))))
            yield DONE
        finally:
            watcher.cancel()
            self._close(tickets)

    def _last_chunk(self, ticket: Ticket, index: int, envelope: Envelope, include_usage: bool,
                    text: str, logprobs: ChoiceLogprobs | None) -> dict[str, Any]:
        out = ticket.outcome()
        if ticket.holding:
            text = out.content
        return envelope.chunk(index, text or None, out.finish_reason, used=None if include_usage else _used(ticket),
                              include_usage=include_usage, tool_calls=out.tool_calls,
                              logprobs=None if logprobs is None else logprobs.take())

    def _close(self, tickets: list[Ticket]) -> None:
        for ticket in tickets:
            ticket.cancel()
            self.live.discard(ticket)


def _used(ticket: Ticket) -> dict[str, int]:
    return usage(ticket.request.reply.prompt_tokens, len(ticket.request.reply.token_ids))


def _bad(error: MixtralTrtError, prompt_field: str | None = None) -> HTTPError:
    """400 with the error's one line; `param` the field it names (`prompt_field` for the prompt's own)."""
    param = param_of(error)
    return HTTPError(400, str(error), prompt_field if param == "prompt" and prompt_field else param)


def _cancel_admitted(work: asyncio.Future) -> None:
    if not work.cancelled() and work.exception() is None:
        for ticket in work.result().tickets:
            ticket.cancel()
