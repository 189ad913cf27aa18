"""Chat messages (OpenAI-style dicts) checked and normalized into turns, by mistral-common's rules.

Roles: system, user, assistant (text `content`, or `tool_calls`: [{"id", "type": "function", "function":
{"name", "arguments": JSON text or dict}}]) and tool ({"tool_call_id", "name" (optional), "content"}).
- system messages are taken out and joined with "\\n\\n" into one system prompt;
- consecutive user (or assistant) messages merge: contents joined with "\\n\\n" (empty ones skipped), tool
  calls concatenated; a merged assistant turn cannot hold both text and tool calls; tool messages never merge;
- a conversation that does not start with a user message gets an empty one in front;
- call ids are 9 characters a-z A-Z 0-9, function names 1-64 of a-z A-Z 0-9 _ -; every tool call is answered
  by a tool message before the next assistant message; a conversation cannot start with tool calls;
- arguments and tool results that are JSON are re-serialized (json.dumps, non-ASCII kept); "" becomes {}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError

ROLES = ("system", "user", "assistant", "tool")
JOIN = "\n\n"
# Which role may follow which (mistral-common's validator).
_ALLOWED_NEXT = {"system": {"system", "user", "assistant"}, "user": {"system", "user", "assistant"},
                 "assistant": {"user", "assistant", "tool"}, "tool": {"user", "assistant", "tool"}}
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CALL_ID = re.compile(r"[a-zA-Z0-9]{9}")


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str  # normalized JSON text (or the text given, when it is not JSON)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant" | "tool"
    content: str = ""
    calls: tuple[Call, ...] = ()  # assistant
    call_id: str = ""  # tool


def normalize(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[Turn]]:
    """(system prompt, turns) of a conversation; raises MixtralTrtError("chat: ...") when it is invalid."""
    if isinstance(messages, Mapping | str) or not messages:
        raise MixtralTrtError("chat: the conversation has no messages")
    system: list[str] = []
    turns: list[Turn] = []
    previous, pending = None, 0  # pending: tool calls not answered yet
    for n, m in enumerate(messages):
        role = m.get("role") if isinstance(m, Mapping) else None
        if role not in ROLES:
            raise MixtralTrtError(f"chat: message {n} has role {role!r}; expected one of {', '.join(ROLES)}")
        if previous is not None and role not in _ALLOWED_NEXT[previous]:
            raise MixtralTrtError(f"chat: message {n}: role {role!r} cannot follow {previous!r}")
        content = m.get("content")
        if role == "assistant":
            turn = _assistant(n, m, first=previous is None)
            if pending:
                raise MixtralTrtError(f"chat: message {n} (assistant) comes before the results of {pending} "
                                      "tool call(s)")
            pending = len(turn.calls)
            if previous == "assistant":
                turn = _merge_assistant(n, turns.pop(), turn)
            turns.append(turn)
        elif role == "tool":
            turns.append(_tool(n, m))
            pending -= 1
        elif not isinstance(content, str):
            raise MixtralTrtError(f"chat: message {n} ({role}) content must be a string")
        elif role == "system":
            system += [content] if content else []
        elif previous == "user":
            turns.append(Turn("user", JOIN.join(c for c in (turns.pop().content, content) if c)))
        else:
            turns.append(Turn("user", content))
        previous = role
    if len(messages) == 1 and previous not in ("user", "system"):
        raise MixtralTrtError("chat: a conversation must start with a user or system message")
    if not turns or turns[0].role != "user":
        turns.insert(0, Turn("user", ""))
    return (JOIN.join(system) if system else None), turns


def json_text(text: str | None) -> str:
    """mistral-common's normalization of arguments and tool results: "" -> "{}", JSON re-serialized."""
    if not text:
        return "{}"
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except json.JSONDecodeError:
        return text


def json_value(text: str) -> Any:
    """The value of JSON text, or the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _assistant(n: int, m: Mapping[str, Any], first: bool) -> Turn:
    content, calls = m.get("content"), m.get("tool_calls") or ()
    if content is not None and not isinstance(content, str):
        raise MixtralTrtError(f"chat: message {n} (assistant) content must be a string")
    if isinstance(calls, Mapping | str):
        raise MixtralTrtError(f"chat: message {n} (assistant) tool_calls must be a list")
    calls = tuple(_call(n, c) for c in calls)
    if calls and content:
        raise MixtralTrtError(f"chat: message {n} (assistant) has both content and tool_calls")
    if not calls and not content:
        raise MixtralTrtError(f"chat: message {n} (assistant) is empty")
    if calls and first:
        raise MixtralTrtError(f"chat: message {n} (assistant): a conversation cannot start with tool calls")
    return Turn("assistant", content or "", calls)


def _merge_assistant(n: int, a: Turn, b: Turn) -> Turn:
    content = JOIN.join(c for c in (a.content, b.content) if c)
    if content and (a.calls or b.calls):
        raise MixtralTrtError(f"chat: message {n} (assistant) merges with the previous assistant message into "
                              "one turn with both content and tool calls")
    return Turn("assistant", content, a.calls + b.calls)


def _call(n: int, call: Any) -> Call:
    where = f"chat: message {n} (assistant) tool call"
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or call.get("type", "function") != "function":
        raise MixtralTrtError(f"{where}: expected {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}")
    name, arguments, call_id = fn.get("name"), fn.get("arguments"), call.get("id")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise MixtralTrtError(f"{where}: name {name!r} must be 1-64 characters a-z A-Z 0-9 _ -")
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise MixtralTrtError(f"{where} {name}: id {call_id!r} must be 9 characters a-z A-Z 0-9")
    if isinstance(arguments, Mapping):
        arguments = json.dumps(arguments, ensure_ascii=False)
    if arguments is not None and not isinstance(arguments, str):
        raise MixtralTrtError(f"{where} {name}: arguments must be JSON text or a dict")
    return Call(call_id, name, json_text(arguments))


def _tool(n: int, m: Mapping[str, Any]) -> Turn:
    call_id, name, content = m.get("tool_call_id"), m.get("name"), m.get("content")
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise MixtralTrtError(f"chat: message {n} (tool) tool_call_id {call_id!r} must be 9 characters a-z A-Z 0-9")
    if name is not None and not (isinstance(name, str) and NAME.fullmatch(name)):
        raise MixtralTrtError(f"chat: message {n} (tool) name {name!r} must be 1-64 characters a-z A-Z 0-9 _ -")
    if content is not None and not isinstance(content, str):
        raise MixtralTrtError(f"chat: message {n} (tool) content must be a string")
    return Turn("tool", json_text(content), call_id=call_id)
