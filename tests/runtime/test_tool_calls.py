"""Tool calls: tool_choice resolution, the model's [TOOL_CALLS] output parsed into calls (ids generated in
the v3 format), malformed output kept as content with finish_reason "stop", a cut reply "length", and the
streamed chunks giving the same result as the completion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixtral_trt.chat.messages import CALL_ID
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.chat_completion import ChatRequest, finish_chat, stream_chat
from mixtral_trt.runtime.reply import Completion, StreamEvent
from mixtral_trt.runtime.tool_calls import ToolCall, parse_calls, resolve_choice

NAMES = ("get_weather", "get_time")
CALLS_ID = 5


def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize(("choice", "expected"), [
    (None, "auto"), ("auto", "auto"), ("none", "none"), ("any", "any"), ("required", "any"),
    ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
])
def test_resolve_choice(choice, expected):
    assert resolve_choice(choice, NAMES) == expected


@pytest.mark.parametrize(("choice", "names", "match"), [
    ("sometimes", NAMES, "expected one of auto, none, any, required"),
    ({"type": "function", "function": {"name": "nope"}}, NAMES, "no tool named 'nope'"),
    ({"function": "get_time"}, NAMES, "expected 'auto', 'none', 'any' or"),
    ("any", (), "needs tools"),
])
def test_bad_choices_are_user_errors(choice, names, match):
    with pytest.raises(MixtralTrtError, match=match):
        resolve_choice(choice, names)
    assert resolve_choice(None, ()) == "none"


def test_parse_calls():
    text = ' [{"name": "get_weather", "arguments": {"city": "Zürich"}}, {"name": "get_time", "arguments": "{}",' \
           ' "id": "abcDEF123"}]'
    calls = parse_calls(text, NAMES, rng())
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Zürich"}), ("get_time", {})]
    assert CALL_ID.fullmatch(calls[0].id) and calls[1].id == "abcDEF123"  # the model's valid id is kept
    assert parse_calls('{"name": "get_time", "arguments": {}}', NAMES, rng())[0].name == "get_time"  # one object
    assert calls[0].to_openai() == {"id": calls[0].id, "type": "function",
                                    "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}
    ids = {c.id for c in parse_calls(json.dumps([{"name": "get_time", "arguments": {}}] * 50), NAMES, rng())}
    assert len(ids) == 50


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '[{"name": "unknown", "arguments": {}}]', '[{"arguments": {}}]',
    '[{"name": "get_time", "arguments": [1]}]', '[{"name": "get_time", "arguments": "not json"}]', '"text"',
    '[{"name": "get_time", "arguments": {}}, 3]',
])
def test_malformed_calls_parse_to_none(text):
    assert parse_calls(text, NAMES, rng()) is None


def _request(tool_names=NAMES):
    return ChatRequest(prompt=[1, 2, 3], constraint=None, tool_names=tool_names, tool_calls_id=CALLS_ID)


@pytest.mark.parametrize(("ids", "text", "finish", "expected"), [
    ([CALLS_ID, 10, 11, 2], '[{"name": "get_time", "arguments": {}}]', "stop", (None, 1, "tool_calls")),
    ([CALLS_ID, 10, 11, 2], '[{"name": "get_time", "arguments": ', "stop", ('[{"name": "get_time", "arguments": ',
                                                                           0, "stop")),
    ([CALLS_ID, 10, 11], '[{"name": "get_time"', "length", ('[{"name": "get_time"', 0, "length")),
    ([10, 11, 2], "Hello", "stop", ("Hello", 0, "stop")),
])
def test_finish_chat(ids, text, finish, expected):
    done = finish_chat(_request(), Completion(ids, text, finish, None, 3), rng())
    content, n_calls, finish_reason = expected
    assert (done.content, len(done.tool_calls), done.finish_reason) == (content, n_calls, finish_reason)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (3, len(ids),
                                                                                                 3 + len(ids))
    assert done.message()["role"] == "assistant"


def test_calls_are_not_parsed_without_tools():
    done = finish_chat(_request(tool_names=()), Completion([CALLS_ID, 10, 2], '[{"name": "get_time"}]', "stop",
                                                           None, 3), rng())
    assert done.tool_calls == () and done.content == '[{"name": "get_time"}]'


@pytest.mark.parametrize(("pieces", "finish"), [
    ([(CALLS_ID, ""), (10, '[{"name": "get_time", '), (11, '"arguments": {}}]'), (2, "")], "stop"),
    ([(CALLS_ID, ""), (10, '[{"name": "get_time", '), (11, '"argu')], "length"),
    ([(10, "Hel"), (11, "lo"), (2, "")], "stop"),
])
def test_stream_chat_gives_what_finish_chat_gives(pieces, finish):
    events = [StreamEvent(0, t, text, finish if n == len(pieces) - 1 else None) for n, (t, text) in enumerate(pieces)]
    chunks = list(stream_chat(_request(), iter(events), rng()))
    done = finish_chat(_request(), Completion([t for t, _ in pieces], "".join(x for _, x in pieces), finish, None, 3),
                       rng())
    assert "".join(c.content for c in chunks) == (done.content or "")
    assert chunks[-1].tool_calls == done.tool_calls and chunks[-1].finish_reason == done.finish_reason
    assert chunks[-1].usage == done.usage and all(c.finish_reason is None for c in chunks[:-1])
    if done.tool_calls:
        assert len(chunks) == 1 and isinstance(done.tool_calls[0], ToolCall)  # calls come whole, at the end
