"""What one request may ask of the server, and how long a client may take to send it.

Beyond a limit the request is refused before any work: 413 for a body over `max_body_bytes`, 408 for a body
not received within `body_timeout` seconds (a connection whose request line and headers take longer than
`header_timeout` is closed), 400 naming the field for the rest. The JSON-size limits count the schema as
compact JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError

from .protocol import BadRequest, ChatCompletionRequest, Sampling


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 * 2**20  # 8 MiB
    header_timeout: float = 10.0  # seconds for the request line and headers
    body_timeout: float = 30.0  # seconds for the whole body
    max_depth: int = 64  # JSON nesting
    max_stop: int = 16  # stop strings
    max_stop_chars: int = 256  # characters of one stop string
    max_stop_token_ids: int = 256
    max_logit_bias: int = 1024  # entries
    max_tools: int = 128  # OpenAI's limit
    max_schema_bytes: int = 64 * 2**10  # one tool's parameters, or the response_format schema

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise MixtralTrtError(f"{name.replace('_', '-')}={value!r}: must be a number > 0")

    def check(self, body: Sampling) -> None:
        """Raise BadRequest naming the first field beyond its limit."""
        stop = [body.stop] if isinstance(body.stop, str) else body.stop or []
        _at_most("stop", len(stop), self.max_stop, "stop strings")
        for n, s in enumerate(stop):
            _at_most(f"stop[{n}]" if len(stop) > 1 else "stop", len(s), self.max_stop_chars, "characters", "stop")
        _at_most("stop_token_ids", len(body.stop_token_ids or ()), self.max_stop_token_ids, "ids")
        _at_most("logit_bias", len(body.logit_bias or {}), self.max_logit_bias, "entries")
        if not isinstance(body, ChatCompletionRequest):
            return
        _at_most("tools", len(body.tools or ()), self.max_tools, "tools")
        for n, tool in enumerate(body.tools or ()):
            fn = tool.get("function")
            parameters = fn.get("parameters") if isinstance(fn, dict) else None
            _at_most(f"tools[{n}].function.parameters", _json_size(parameters), self.max_schema_bytes,
                     "bytes of JSON", "tools")
        _at_most("response_format", _json_size(body.response_format), self.max_schema_bytes, "bytes of JSON")


def depth_of(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _json_size(value: Any) -> int:
    return 0 if value is None else len(json.dumps(value, separators=(",", ":")).encode())


def _at_most(field: str, count: int, limit: int, unit: str, param: str | None = None) -> None:
    if count > limit:
        raise BadRequest(f"{field}: {count} {unit}, the server takes at most {limit}", param or field)
