"""The ASGI middleware in front of every route: the API key first, then the body, then the app.

On `/v1/*` a missing, wrong or malformed `Authorization: Bearer KEY` is 401 before a byte of the body is
read (the key compared as bytes, in constant time). The body is then read whole, up to the limit (413, at
once when Content-Length says so) and within its deadline (408), and handed to the app. An error the app
did not handle is a 500 in OpenAI's shape, counted in /metrics like every error.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from .serving import HTTPError, JSONReply

if TYPE_CHECKING:
    from .serving import Serving

log = logging.getLogger("mixtral_trt.serve")


class Gate:
    def __init__(self, app: Any, serving: Serving, api_key: str | None) -> None:
        self.app, self.serving = app, serving
        self.key = api_key.encode() if api_key is not None else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if self.key is not None and scope["path"].startswith("/v1") and not self._authorized(scope):
                raise HTTPError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                headers={"WWW-Authenticate": "Bearer", "Connection": "close"})  # body unread
            body = await self._body(scope, receive)
            await self.app(scope, _replay(body, receive), tracked)
        except HTTPError as e:
            if not started:
                await _send(send, self.serving.error(e.status, e.message, e.param, e.headers))
        except Exception as e:  # a bug: the client gets a 500 in OpenAI's shape, the log the traceback
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send(send, self.serving.error(500, f"internal error: {type(e).__name__}"))
            else:
                self.serving.metrics.errors.labels("500").inc()

    def _authorized(self, scope: dict) -> bool:
        value = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def _body(self, scope: dict, receive: Any) -> bytes:
        limits = self.serving.limits
        too_large = HTTPError(413, f"body: larger than the server's limit of {limits.max_body_bytes} bytes",
                              headers={"Connection": "close"})
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise too_large
        chunks, size = [], 0
        try:
            async with asyncio.timeout(limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limits.max_body_bytes:
                        raise too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise HTTPError(408, f"body: not received within {limits.body_timeout:g} s",
                            headers={"Connection": "close"}) from None
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that gives the body read already, then what the client sends next (its disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send(send: Any, reply: JSONReply) -> None:
    payload = json.dumps(reply.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
