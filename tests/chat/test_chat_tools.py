"""Tools in the v3 chat format against mistral-common's `encode_chat_completion` (the oracle): available
tools, assistant tool calls, tool results, several calls per turn, multi-turn, non-ASCII; and a seeded
fuzz of random conversations where both must give the same ids or both refuse. v1 refuses tools."""

from __future__ import annotations

import json
import random
import string

import pytest

from mixtral_trt.chat import Tokenizer
from mixtral_trt.chat.tokenizer import mistral_common_file
from mixtral_trt.common.errors import MixtralTrtError
from support.mistral import mistral_tokenizer, openai_request

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Météo d'une ville — °C ou °F",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get-time", "parameters": {"type": "object", "properties": {}}}}


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


CASES = {
    "tools": ([{"role": "user", "content": "Weather in Paris?"}], [WEATHER]),
    "tools-system-multiturn": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Weather?"}],
                               [WEATHER, CLOCK]),
    "call-and-result": ([{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": None,
                          "tool_calls": [call("abcDEF123", "get_weather", '{"city": "Paris"}')]},
                         {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_weather",
                          "content": '{"temp": 21}'}], [WEATHER]),
    "several-calls-multiturn": ([
        {"role": "user", "content": "Paris and Tokyo?"},
        {"role": "assistant", "tool_calls": [call("aaaaaaaa1", "get_weather", '{"city":"Paris"}'),
                                             call("bbbbbbbb2", "get_weather", '{"city": "東京", "unit": "c"}'),
                                             call("ccccccc3c", "get-time", "")]},
        {"role": "tool", "tool_call_id": "aaaaaaaa1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "bbbbbbbb2", "content": "22"},
        {"role": "tool", "tool_call_id": "ccccccc3c", "content": ""},
        {"role": "assistant", "content": "Sunny in Paris, 22 in Tokyo."},
        {"role": "user", "content": "And Zürich?"},
        {"role": "assistant", "tool_calls": [call("ddddddd4d", "get_weather", {"city": "Zürich"})]},
        {"role": "tool", "tool_call_id": "ddddddd4d", "content": "[1, 2]"}], [WEATHER, CLOCK]),
    "non-ascii-arguments": ([
        {"role": "user", "content": "Où ? 😀"},
        {"role": "assistant", "tool_calls": [call("Zz0Zz0Zz0", "get_weather",
                                                  '{"city": "Zürich 😀 Ωμέγα", "unit": "\\u00e9"}')]},
        {"role": "tool", "tool_call_id": "Zz0Zz0Zz0", "content": '{"résumé": "très chaud ☀", "n": [1.5, null]}'}],
        [WEATHER]),
    "text-arguments-and-results": ([
        {"role": "user", "content": "t"},
        {"role": "assistant", "tool_calls": [call("q1w2e3r4t", "get-time", "not json {")]},
        {"role": "tool", "tool_call_id": "q1w2e3r4t", "content": "plain text, not JSON"},
        {"role": "user", "content": "again"}], None),
}


@pytest.fixture(scope="module")
def v3():
    return Tokenizer(mistral_common_file("v3")), mistral_tokenizer("v3")


@pytest.mark.parametrize("name", CASES)
def test_tools_equal_mistral_common(v3, name):
    ours, theirs = v3
    messages, tools = CASES[name]
    expected = theirs.encode_chat_completion(openai_request(messages, tools)).tokens
    got = ours.encode_chat(messages, tools=tools)
    assert got == expected, f"{name}:\nours   {got}\ntheirs {expected}"


def test_tool_tokens_are_where_the_format_puts_them(v3):
    tok, _ = v3
    messages, tools = CASES["several-calls-multiturn"]
    ids = tok.encode_chat(messages, tools=tools)
    c = tok.control_tokens
    last_inst = len(ids) - 1 - ids[::-1].index(c["[INST]"])
    assert ids.count(c["[AVAILABLE_TOOLS]"]) == 1 and ids[last_inst - 1] == c["[/AVAILABLE_TOOLS]"]
    assert ids.count(c["[TOOL_CALLS]"]) == 2 and ids.count(c["[TOOL_RESULTS]"]) == 4
    start = ids.index(c["[TOOL_CALLS]"])
    calls = json.loads(tok.decode(ids[start + 1: ids.index(tok.eos_id, start)]))
    assert calls == [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "aaaaaaaa1"},
                     {"name": "get_weather", "arguments": {"city": "東京", "unit": "c"}, "id": "bbbbbbbb2"},
                     {"name": "get-time", "arguments": {}, "id": "ccccccc3c"}]


# ---- random conversations: same ids, or both refuse ---------------------------------------------------
WORDS = ["hi", "Paris", "東京", "😀", "Ωμέγα", "  spaced ", "line\nbreak", "", "x", "ümlaut", '"quoted"', "{", "42"]


def _conversation(rng: random.Random) -> list[dict]:
    def text():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))

    def arguments():
        r = rng.random()
        if r < 0.6:
            return json.dumps({"city": text(), "n": rng.randint(-5, 500), "l": [1.5, None]},
                              ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        return {"city": text()} if r < 0.8 else rng.choice(["", "not json", "[1,2]", "3"])

    messages, waiting = [], []
    for _ in range(rng.randint(1, 9)):
        r = rng.random()
        if waiting and r < 0.8:
            messages.append({"role": "tool", "tool_call_id": waiting.pop(0), "name": "get_weather",
                             "content": rng.choice([text(), '{"a": 1}', "", "[1, 2]", "null", "3.0"])})
        elif r < 0.35 or r >= 0.75:
            messages.append({"role": "user", "content": text()})
        elif r < 0.45:
            messages.append({"role": "system", "content": text()})
        elif (n := rng.choice([0, 0, 1, 2, 3])) and messages:
            calls = [call("".join(rng.choices(string.ascii_letters + string.digits, k=9)),
                          rng.choice(["get_weather", "get-time"]), arguments()) for _ in range(n)]
            waiting = [c["id"] for c in calls]
            messages.append({"role": "assistant", "content": rng.choice([None, ""]), "tool_calls": calls})
        else:
            messages.append({"role": "assistant", "content": text() or "ok"})
    messages += [{"role": "tool", "tool_call_id": w, "content": text()} for w in waiting]
    if messages[-1]["role"] in ("assistant", "system"):
        messages.append({"role": "user", "content": text()})
    return messages


def test_random_conversations_equal_mistral_common(v3):
    ours, theirs = v3
    rng = random.Random(12)
    same = refused = 0
    for n in range(300):
        messages, tools = _conversation(rng), rng.choice([None, [], [WEATHER], [WEATHER, CLOCK]])
        try:
            expected = theirs.encode_chat_completion(openai_request(messages, tools)).tokens
        except Exception:  # mistral-common refuses it: so must we
            with pytest.raises(MixtralTrtError, match="^chat: "):
                ours.encode_chat(messages, tools=tools)
            refused += 1
            continue
        assert ours.encode_chat(messages, tools=tools) == expected, f"conversation {n}: {json.dumps(messages)}"
        same += 1
    assert same > 150 and refused > 30, (same, refused)  # both kinds are exercised


# ---- errors ------------------------------------------------------------------------------------------
USER = {"role": "user", "content": "q"}


@pytest.mark.parametrize(("messages", "match"), [
    ([USER, {"role": "assistant", "tool_calls": [call("short", "get_weather", "{}")]}], "id 'short' must be 9"),
    ([USER, {"role": "assistant", "tool_calls": [call("abcdefghi", "bad name", "{}")]}], "name 'bad name'"),
    ([USER, {"role": "assistant", "content": "text", "tool_calls": [call("abcdefghi", "f", "{}")]}],
     "both content and tool_calls"),
    ([USER, {"role": "assistant", "tool_calls": [call("abcdefghi", "f", "{}")]},
      {"role": "assistant", "content": "no results yet"}], "before the results of 1 tool call"),
    ([USER, {"role": "tool", "tool_call_id": "abcdefghi", "content": "x"}], "'tool' cannot follow 'user'"),
    ([USER, {"role": "assistant", "tool_calls": [call("abcdefghi", "f", "{}")]},
      {"role": "tool", "tool_call_id": None, "content": "x"}], "tool_call_id None"),
    ([USER, {"role": "assistant", "tool_calls": [call("abcdefghi", "f", 3)]}], "arguments must be JSON text"),
    ([{"role": "assistant", "tool_calls": [call("abcdefghi", "f", "{}")]}, USER], "cannot start with tool calls"),
])
def test_invalid_tool_conversations_are_user_errors(v3, messages, match):
    with pytest.raises(MixtralTrtError, match=match):
        v3[0].encode_chat(messages)


@pytest.mark.parametrize(("tools", "match"), [
    ({"type": "function"}, "expected a list"),
    ([{"type": "retrieval"}], "tool 0 must be"),
    ([{"type": "function", "function": {"name": "a b"}}], "name 'a b'"),
    ([WEATHER, WEATHER], "two tools are named 'get_weather'"),
    ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "parameters must be a JSON schema"),
])
def test_invalid_tools_are_user_errors(v3, tools, match):
    with pytest.raises(MixtralTrtError, match=match):
        v3[0].encode_chat([USER], tools=tools)


def test_v1_refuses_tools():
    tok = Tokenizer(mistral_common_file("v1"))
    with pytest.raises(MixtralTrtError, match="need the v3 tokenizer.*v1, which has no tool tokens"):
        tok.encode_chat([USER], tools=[WEATHER])
    messages, _ = CASES["call-and-result"]
    with pytest.raises(MixtralTrtError, match="need the v3 tokenizer"):
        tok.encode_chat(messages)
    assert tok.encode_chat([USER], tools=[]) == tok.encode_chat([USER])  # no tools: the plain format
