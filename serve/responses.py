"""Response bodies in OpenAI's shapes (which Mistral's client reads too): completions, stream chunks,
usage, errors. Plain dicts, serialized by the app."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               429: "requests", 500: "server_error", 503: "server_error"}
ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 503: "service_unavailable"}


@dataclass(frozen=True)
class Outcome:
    """What a choice says: its text (None when it is tool calls), its calls (OpenAI's shape), why it ended."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": ERROR_CODES.get(status)}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Envelope:
    """What every body and chunk of one response repeats: id, object, created, model."""

    def __init__(self, kind: str, model: str) -> None:
        self.chat = kind == "chat"
        self.id = new_id("chatcmpl" if self.chat else "cmpl")
        self.created = int(time.time())
        self.model = model

    def body(self, outcomes: list[Outcome], logprobs: list[dict[str, Any] | None],
             used: dict[str, int]) -> dict[str, Any]:
        """The whole response: one choice per Outcome (its text or tool calls), with its `logprobs` object."""
        choices = []
        for n, (out, lp) in enumerate(zip(outcomes, logprobs, strict=True)):
            if self.chat:
                message: dict[str, Any] = {"role": "assistant", "content": out.content}
                if out.tool_calls:
                    message["tool_calls"] = out.tool_calls
                choices.append({"index": n, "message": message, "finish_reason": out.finish_reason,
                                "logprobs": lp})
            else:
                choices.append({"index": n, "text": out.content, "finish_reason": out.finish_reason,
                                "logprobs": lp})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices, "usage": used}

    def chunk(self, index: int, text: str | None = None, finish_reason: str | None = None, role: bool = False,
              used: dict[str, int] | None = None, include_usage: bool = False,
              tool_calls: list[dict[str, Any]] | None = None, logprobs: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        """One stream chunk of choice `index`; `used` goes on the chunk that finishes it (as Mistral's API
        does), and with OpenAI's `stream_options.include_usage` every chunk carries a usage field. Tool
        calls come whole, in the chunk that finishes the reply."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish_reason, "logprobs": logprobs}
        out = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": [choice]}
        if used is not None or include_usage:
            out["usage"] = used
        return out

    def usage_chunk(self, used: dict[str, int]) -> dict[str, Any]:
        """OpenAI's last chunk under `include_usage`: no choices, the request's usage."""
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [], "usage": used}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


DONE = sse("[DONE]")
