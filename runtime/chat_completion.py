"""OpenAI-style chat completions: tools, tool_choice and response_format turned into a prompt and a
constraint, and the generated ids turned into content or tool calls.

- tool_choice "auto": free generation; a reply that starts with [TOOL_CALLS] is parsed into calls (with a
  JSON `response_format`, the grammar allows either the calls or the JSON).
- "none": the tools stay in the prompt, the [TOOL_CALLS] token is banned.
- "any" / a named function: the grammar allows only [TOOL_CALLS] and a JSON list of calls whose arguments
  match the called tool's parameters.
- response_format {"type": "json_object"} / {"type": "json_schema", "json_schema": {"name", "schema"}}:
  the grammar allows only such JSON.
A reply whose calls do not parse becomes content with finish_reason "stop"; a reply cut by
max_new_tokens has finish_reason "length".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.chat.template import check_tools
from mixtral_trt.common.errors import MixtralTrtError

from .chat import chat_prompt
from .constrained import BannedTokens, Constraint, compile_lark, json_lark
from .json_schema import check_schema
from .tool_calls import ToolCall, calls_schema, parse_calls, resolve_choice

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer

    from .logprobs import TokenLogprob
    from .reply import Completion, StreamEvent

ConstraintFactory = Callable[[], Constraint]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatCompletion:
    content: str | None  # None when the reply is tool calls
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str  # "stop" | "length" | "tool_calls"
    usage: Usage
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None  # one per token id, when SamplingParams.logprobs is set

    def message(self) -> dict[str, Any]:
        """The reply as an assistant message, ready to extend the conversation."""
        if self.tool_calls:
            return {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in self.tool_calls]}
        return {"role": "assistant", "content": self.content or ""}


@dataclass(frozen=True)
class ChatChunk:
    """A streamed piece: new content text; the last chunk has the tool calls, finish_reason and usage."""

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens since the previous chunk (logprobs set)


@dataclass(frozen=True)
class ChatRequest:
    prompt: list[int]
    constraint: ConstraintFactory | None  # a fresh constraint per generation
    tool_names: tuple[str, ...]  # calls are parsed only when this is not empty
    tool_calls_id: int | None


def response_schema(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema an OpenAI `response_format` asks for (json_object: any object); None for text."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise MixtralTrtError("response_format: json_schema needs {'name': ..., 'schema': {...}}")
        return dict(schema)
    raise MixtralTrtError("response_format: expected {'type': 'text' | 'json_object' | 'json_schema', ...}")


def response_constraint(tokenizer: Tokenizer, response_format: Mapping[str, Any] | None) -> ConstraintFactory | None:
    """The constraint of a `response_format` alone (generate)."""
    schema = response_schema(response_format)
    if schema is None:
        return None
    check_schema(schema, "response_format")
    return _compile(['start: " "? value', json_lark(schema)], tokenizer, "response_format")


def prepare_chat(tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
                 tool_choice: str | Mapping[str, Any] | None, response_format: Mapping[str, Any] | None,
                 safe_mode: bool = False, parallel_tool_calls: bool = True) -> ChatRequest:
    """Prompt ids and constraint of a chat completion request (everything checked before any generation)."""
    functions = check_tools(tools)
    names = tuple(fn["name"] for fn in functions)
    choice = resolve_choice(tool_choice, names)
    schema = response_schema(response_format)
    if schema is not None:
        check_schema(schema, "response_format")
    for fn in functions:
        check_schema(fn["parameters"], f"tools: {fn['name']} parameters")
    prompt = chat_prompt(tokenizer, messages, safe_mode, tools)
    calls_id = tokenizer.control_tokens.get("[TOOL_CALLS]")
    if choice not in ("auto", "none") and schema is not None:
        raise MixtralTrtError(f"response_format cannot be combined with tool_choice={tool_choice!r}: "
                              "the reply must be a tool call")
    constraint = _constraint(tokenizer, functions, choice, schema, parallel_tool_calls, calls_id)
    return ChatRequest(prompt, constraint, names if choice != "none" else (), calls_id)


def _constraint(tokenizer: Tokenizer, functions: list[dict[str, Any]], choice: str, schema: dict[str, Any] | None,
                parallel: bool, calls_id: int | None) -> ConstraintFactory | None:
    if choice == "none" or not functions:
        if schema is not None:
            return _compile(['start: " "? value', json_lark(schema)], tokenizer, "response_format")
        return functools.partial(BannedTokens, tokenizer.vocab_size, (calls_id,)) if functions else None
    if choice == "auto" and schema is None:
        return None
    for fn in functions:  # a tool whose parameters cannot be enforced is named in the error
        _compile(['start: " "? value', json_lark(fn["parameters"] or {"type": "object"})], tokenizer,
                 f"tools: {fn['name']} parameters")
    forced = [fn for fn in functions if fn["name"] == choice] or functions  # a named function, or any
    calls = f'calls_reply: <[{calls_id}]> " "? calls\n{json_lark(calls_schema(forced, parallel), "calls")}'
    if choice != "auto":
        return _compile(["start: calls_reply", calls], tokenizer, "tools")
    return _compile(['start: calls_reply | " "? value', calls, json_lark(schema)], tokenizer, "response_format")


def _compile(rules: list[str], tokenizer: Tokenizer, what: str) -> ConstraintFactory:
    return compile_lark("\n".join(rules), tokenizer, what).constraint


def finish_chat(request: ChatRequest, done: Completion, rng: np.random.Generator) -> ChatCompletion:
    usage = Usage(len(request.prompt), len(done.token_ids))
    text = done.text or ""
    if _starts_with_calls(request, done.token_ids) and done.finish_reason != "length":
        calls = parse_calls(text, request.tool_names, rng)
        if calls is not None:
            return ChatCompletion(None, calls, "tool_calls", usage, done.token_ids, done.logprobs)
    return ChatCompletion(text, (), done.finish_reason, usage, done.token_ids, done.logprobs)


def stream_chat(request: ChatRequest, events: Iterator[StreamEvent], rng: np.random.Generator) -> Iterator[ChatChunk]:
    """Content pieces as they come; a reply of tool calls is held back and given, parsed, at the end."""
    ids: list[int] = []
    held: list[str] = []
    logprobs: list[TokenLogprob] = []  # not yet given in a chunk
    for event in events:
        ids.append(event.token_id)
        if event.logprob is not None:
            logprobs.append(event.logprob)
        if _starts_with_calls(request, ids):
            held.append(event.text)
        elif event.text:
            yield ChatChunk(content=event.text, logprobs=tuple(logprobs))
            logprobs.clear()
        if event.finish_reason is None:
            continue
        usage = Usage(len(request.prompt), len(ids))
        if held and event.finish_reason != "length":
            calls = parse_calls("".join(held), request.tool_names, rng)
            if calls is not None:
                yield ChatChunk(tool_calls=calls, finish_reason="tool_calls", usage=usage, logprobs=tuple(logprobs))
                return
        yield ChatChunk(content="".join(held), finish_reason=event.finish_reason, usage=usage,
                        logprobs=tuple(logprobs))
        return
    yield ChatChunk(finish_reason="length", usage=Usage(len(request.prompt), 0))  # max_new_tokens=0


def _starts_with_calls(request: ChatRequest, ids: Sequence[int]) -> bool:
    return bool(request.tool_names) and bool(ids) and ids[0] == request.tool_calls_id
