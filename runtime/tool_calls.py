"""Tool calls: the choice a request makes (tool_choice), the JSON a forced call must match, and the model's
`[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` output parsed into `ToolCall`s.

The v3 instruct models write calls without ids (the prompt format carries them); each parsed call gets a
fresh 9-character id (a-z A-Z 0-9, what the v3 format requires), or the model's own when it wrote a valid one.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixtral_trt.chat.messages import CALL_ID
from mixtral_trt.common.errors import MixtralTrtError

from .json_schema import reroot

CHOICES = ("auto", "none", "any", "required")  # "required" is OpenAI's name for "any"
_ID_CHARS = np.array(list(string.ascii_letters + string.digits))


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The call as an assistant message's `tool_calls` entry (arguments as JSON text)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


def resolve_choice(tool_choice: str | Mapping[str, Any] | None, names: Sequence[str]) -> str:
    """"auto" | "none" | "any" | the name of the one function to call. Default: "auto" with tools, else "none"."""
    if tool_choice is None:
        return "auto" if names else "none"
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if tool_choice.get("type", "function") != "function" or not isinstance(name, str):
            raise MixtralTrtError("tool_choice: expected 'auto', 'none', 'any' or "
                                  "{'type': 'function', 'function': {'name': ...}}")
        if name not in names:
            raise MixtralTrtError(f"tool_choice: no tool named {name!r} (tools: {', '.join(names) or 'none'})")
        return name
    if tool_choice not in CHOICES:
        raise MixtralTrtError(f"tool_choice={tool_choice!r}: expected one of {', '.join(CHOICES)} or a named function")
    choice = "any" if tool_choice == "required" else tool_choice
    if choice == "any" and not names:
        raise MixtralTrtError(f"tool_choice={tool_choice!r} needs tools")
    return choice


def calls_schema(functions: Sequence[Mapping[str, Any]], parallel: bool = True) -> dict[str, Any]:
    """JSON schema of the list of calls: each {"name": one of the functions, "arguments": its parameters}.
    Each function's parameters keep their own root: they live under `$defs` as `tool_<n>`, their local
    references re-rooted there (json_schema.reroot), so `#/$defs/...` and a recursive `#` mean what they
    meant in the tool's schema."""
    defs = {f"tool_{n}": reroot(fn["parameters"] or {"type": "object"}, f"/$defs/tool_{n}")
            for n, fn in enumerate(functions)}
    items = [{"type": "object",
              "properties": {"name": {"const": fn["name"]}, "arguments": {"$ref": f"#/$defs/tool_{n}"}},
              "required": ["name", "arguments"], "additionalProperties": False} for n, fn in enumerate(functions)]
    return {"$defs": defs, "type": "array", "items": {"anyOf": items}, "minItems": 1,
            **({} if parallel else {"maxItems": 1})}


def parse_calls(text: str, names: Sequence[str], rng: np.random.Generator) -> tuple[ToolCall, ...] | None:
    """The calls in the text after [TOOL_CALLS], or None when it is not a list of calls to known tools
    with object arguments (a single call object is accepted too)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    value = [value] if isinstance(value, dict) else value
    if not isinstance(value, list) or not value:
        return None
    calls = []
    for call in value:
        if not isinstance(call, dict) or call.get("name") not in names:
            return None
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        call_id = call.get("id")
        valid_id = isinstance(call_id, str) and CALL_ID.fullmatch(call_id)
        calls.append(ToolCall(call_id if valid_id else new_call_id(rng), call["name"], arguments))
    return tuple(calls)


def new_call_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_ID_CHARS, 9))
