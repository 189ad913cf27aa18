"""`chat --tools/--tool-choice/--json/--json-schema` and `generate --json/--json-schema`: the printed calls
and JSON equal the library's (same seed), the interactive tool loop asks for results and answers with them,
and user errors are one line with exit code 2."""

from __future__ import annotations

import io
import json
import sys

import jsonschema
import pytest

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                           "unit": {"enum": ["celsius", "fahrenheit"]}},
          "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]
SAMPLING = ("--temperature", "1", "--seed", "2", "--max-new-tokens", "200")
SETTINGS = dict(temperature=1.0, seed=2, max_new_tokens=200)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    (tmp_path / "city.json").write_text(json.dumps(SCHEMA))
    return tmp_path


def test_chat_prints_the_tool_calls(cli, files, tiny_v3_engine_dir):
    from mixtral_trt import runtime

    result = cli("chat", tiny_v3_engine_dir, "--message", "Weather in Oslo?", "--tools", files / "tools.json",
                 "--tool-choice", "any", *SAMPLING)
    assert result.code == 0, result.err
    expected = runtime.load(tiny_v3_engine_dir).chat_completion(
        [{"role": "user", "content": "Weather in Oslo?"}], tools=TOOLS, tool_choice="any", **SETTINGS)
    assert expected.finish_reason == "tool_calls"
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert lines == [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in expected.tool_calls]


def test_chat_json_schema(cli, files, tiny_v3_engine_dir):
    from mixtral_trt import runtime

    result = cli("chat", tiny_v3_engine_dir, "--message", "Weather?", "--json-schema", files / "city.json", *SAMPLING)
    assert result.code == 0, result.err
    jsonschema.validate(json.loads(result.out), SCHEMA)
    expected = runtime.load(tiny_v3_engine_dir).chat_completion(
        [{"role": "user", "content": "Weather?"}], response_format={"type": "json_schema", "json_schema": {
            "name": "city", "schema": SCHEMA}}, **SETTINGS)
    assert result.out == expected.content + "\n"


def test_interactive_tool_loop(cli, files, tiny_v3_engine_dir, monkeypatch):
    from mixtral_trt import runtime

    lines = iter(["Weather in Oslo?", "/exit"])
    monkeypatch.setattr(sys, "stdin", type("Tty", (io.StringIO,), {"isatty": lambda self: True})())
    monkeypatch.setattr("builtins.input", lambda prompt="": '{"temp": -3}' if prompt.startswith("result of")
                        else next(lines))
    result = cli("chat", tiny_v3_engine_dir, "--tools", files / "tools.json", "--tool-choice", "get_weather",
                 *SAMPLING)
    assert result.code == 0, result.err
    engine = runtime.load(tiny_v3_engine_dir)
    conversation = [{"role": "user", "content": "Weather in Oslo?"}]
    first = engine.chat_completion(conversation, tools=TOOLS,
                                   tool_choice={"type": "function", "function": {"name": "get_weather"}}, **SETTINGS)
    assert first.tool_calls
    conversation += [first.message()] + [{"role": "tool", "tool_call_id": c.id, "name": c.name,
                                          "content": '{"temp": -3}'} for c in first.tool_calls]
    second = engine.chat_completion(conversation, tools=TOOLS, tool_choice="auto", **SETTINGS)
    calls = "".join(json.dumps({"id": c.id, "name": c.name, "arguments": c.arguments}, ensure_ascii=False) + "\n"
                    for c in first.tool_calls)
    assert result.out == calls + (second.content or "") + "\n"


def test_generate_json(cli, files, tiny_engine, tiny_engine_dir):
    result = cli("generate", tiny_engine_dir, "--prompt", "Weather:", "--json-schema", files / "city.json", *SAMPLING)
    assert result.code == 0, result.err
    expected = tiny_engine.generate("Weather:", response_format={"type": "json_schema", "json_schema": {
        "name": "city", "schema": SCHEMA}}, **SETTINGS)
    assert result.out == expected.text + "\n" and "finish: stop" in result.err
    jsonschema.validate(json.loads(result.out), SCHEMA)
    batch = cli("generate", tiny_engine_dir, "--prompt", "A", "--prompt", "B", "--json", *SAMPLING)
    assert batch.code == 0, batch.err
    texts = [c.text for c in tiny_engine.generate(["A", "B"], response_format={"type": "json_object"}, **SETTINGS)]
    assert batch.out == f"[0] {texts[0]}\n[1] {texts[1]}\n"


@pytest.mark.parametrize(("args", "match"), [
    (("chat", "{v3}", "--message", "hi", "--json", "--json-schema", "{files}/city.json"), "give one of them"),
    (("chat", "{v3}", "--message", "hi", "--tools", "{files}/missing.json"), "missing.json: no such file"),
    (("chat", "{v3}", "--message", "hi", "--tools", "{files}/city.json"), "expected a list of tools"),
    (("chat", "{v3}", "--message", "hi", "--tools", "{files}/tools.json", "--tool-choice", "nope"),
     "no tool named 'nope'"),
    (("chat", "{v1}", "--message", "hi", "--tools", "{files}/tools.json"), "need the v3 tokenizer"),
    (("generate", "{v1}", "--prompt", "hi", "--json-schema", "{files}/tools.json"), "expected a JSON object"),
])
def test_user_errors(cli, files, tiny_engine_dir, tiny_v3_engine_dir, args, match):
    result = cli(*[a.format(v3=tiny_v3_engine_dir, v1=tiny_engine_dir, files=files) for a in args])
    assert result.code == 2 and result.err.startswith("error: ") and match in result.err, result.err
    assert result.err.count("\n") == 1
