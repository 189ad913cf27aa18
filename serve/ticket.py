"""A scheduler request seen from the event loop: the scheduler's thread hands its tokens over through an
asyncio queue; the handler waits for them, or for the client to disconnect (then the request is cancelled)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from mixtral_trt.runtime.chat_completion import ChatRequest, finish_chat

from .responses import Outcome

if TYPE_CHECKING:
    from mixtral_trt.runtime.scheduler import Request

    from .metrics import Metrics

END = object()  # queue sentinel: the request is over
GONE = object()  # the client disconnected


class Ticket:
    """One scheduler request seen from the event loop: its events arrive on an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics, chat: ChatRequest | None = None) -> None:
        self.loop, self.metrics, self.chat = loop, metrics, chat
        self.queue: asyncio.Queue = asyncio.Queue()
        self.request: Request | None = None
        self.over = False

    @property
    def holding(self) -> bool:
        """True when the reply is tool calls (it starts with [TOOL_CALLS]): no text is streamed."""
        ids = self.request.reply.token_ids if self.request is not None else []
        return self.chat is not None and bool(self.chat.tool_names) and bool(ids) and ids[0] == self.chat.tool_calls_id

    def outcome(self) -> Outcome:
        """The finished reply as a choice: tool calls when it is a well-formed call list, else its text."""
        done = self.request.completion()
        if self.chat is None:
            return Outcome(done.text, [], done.finish_reason)
        result = finish_chat(self.chat, done, np.random.default_rng(self.request.params.seed))
        return Outcome(result.content, [c.to_openai() for c in result.tool_calls], result.finish_reason)

    def on_event(self, event) -> None:  # scheduler thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def on_done(self, request: Request) -> None:  # scheduler thread
        self.metrics.observe(request)
        self.loop.call_soon_threadsafe(self.queue.put_nowait, END)

    async def next_events(self, watcher: asyncio.Future):
        """Every StreamEvent queued so far (waiting for one if none), or GONE when the client has
        disconnected (then the request is cancelled). Sets `over` once the request has ended."""
        if self.queue.empty():
            getter = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                self.cancel()
                return GONE
            items = [getter.result()]
        else:
            items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        self.over = self.over or END in items
        return [item for item in items if item is not END]

    def cancel(self) -> None:
        if self.request is not None and not self.request.done:
            self.request.cancel()


async def disconnected(http) -> None:
    """Returns when the client has disconnected (the request body is already read)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return
