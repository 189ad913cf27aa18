"""uvicorn, as the server runs it: streams closed cleanly on shutdown, and a deadline on request headers.

`DrainingServer.shutdown` starts `Serving.drain(grace)` beside uvicorn's own graceful shutdown: once `grace`
seconds have passed, the requests still running are cancelled, so each open stream ends with a final chunk
and `data: [DONE]` instead of being cut mid-body; uvicorn's own deadline (a few seconds later) is only a
backstop for a client that stopped reading. `HeaderTimeoutH11` closes a connection whose request line and
headers are not complete within `header_timeout` seconds of its start or of its previous response (a client
that sends a header a byte at a time holds nothing for long). This module imports uvicorn and h11.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

BACKSTOP = 5.0  # seconds uvicorn waits beyond the grace period before cutting connections


class HeaderTimeoutH11(H11Protocol):
    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a whole request line and headers arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Any, grace: float) -> None:
        super().__init__(config)
        self.drain, self.grace = drain, grace

    async def shutdown(self, sockets: Any = None) -> None:
        draining = asyncio.ensure_future(self.drain(self.grace))
        try:
            await super().shutdown(sockets)
        finally:
            draining.cancel()


def make_server(app: Any, host: str, port: int, grace: float, log_level: str, header_timeout: float) -> DrainingServer:
    protocol = type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": header_timeout})
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,
                            timeout_graceful_shutdown=grace + BACKSTOP, access_log=log_level == "debug")
    return DrainingServer(config, app.state.serving.drain, grace)
