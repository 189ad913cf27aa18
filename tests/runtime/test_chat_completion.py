"""Engine.chat_completion on random-weight engines (fp32 and fp16, v3 tokenizer), which never write JSON
unconstrained: for 20 seeds at temperature 1, every tool_choice="any" reply is tool calls whose arguments
jsonschema (the oracle) accepts, and every json_schema reply parses and validates; the prompt is
mistral-common's; streaming gives the same reply; a short budget gives "length"; a batch mixes constrained
and free prompts, each equal to its run alone."""

from __future__ import annotations

import json

import jsonschema
import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.chat_completion import prepare_chat
from support.mistral import mistral_tokenizer, openai_request

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 1, "maxLength": 16},
    "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit"], "additionalProperties": False}
EVENT = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 12},
    "when": {"type": "string", "format": "date"},
    "guests": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    "kind": {"anyOf": [{"const": "online"}, {"type": "object", "properties": {"room": {"type": "integer",
             "minimum": 1, "maximum": 99}}, "required": ["room"], "additionalProperties": False}]}},
    "required": ["title", "when", "guests", "kind"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add_event", "description": "Add to the calendar",
                                           "parameters": EVENT}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "system", "content": "Réponds brièvement."},
            {"role": "user", "content": "Quel temps fera-t-il à Zürich demain ? 🌦"}]
SEEDS = range(20)
SAMPLING = dict(temperature=1.0, max_new_tokens=160)


def validate(value, schema):
    jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_prompt_equals_mistral_common(tiny_v3_engine):
    expected = mistral_tokenizer("v3").encode_chat_completion(openai_request(MESSAGES, TOOLS)).tokens
    assert prepare_chat(tiny_v3_engine.tokenizer, MESSAGES, TOOLS, "any", None).prompt == expected


def test_any_replies_are_valid_tool_calls(tiny_v3_engine):
    """One call per reply (parallel_tool_calls=False) keeps every reply inside the budget."""
    for seed in SEEDS:
        reply = tiny_v3_engine.chat_completion(MESSAGES, tools=TOOLS, tool_choice="any", parallel_tool_calls=False,
                                               seed=seed, **SAMPLING)
        assert reply.finish_reason == "tool_calls", f"seed {seed}: {reply}"
        assert reply.content is None and len(reply.tool_calls) == 1
        for call in reply.tool_calls:
            validate(call.arguments, SCHEMAS[call.name])
        assert reply.usage.completion_tokens == len(reply.token_ids) <= SAMPLING["max_new_tokens"]
        assert reply.token_ids[-1] == tiny_v3_engine.tokenizer.eos_id


def test_several_calls_per_reply(tiny_v3_engine_dir):
    """fp32 only: the grammar is the same for both dtypes."""
    from mixtral_trt import runtime

    engine = runtime.load(tiny_v3_engine_dir)
    counts = []
    for seed in range(5):
        reply = engine.chat_completion(MESSAGES, tools=TOOLS, tool_choice="required", seed=seed, temperature=1.0,
                                       max_new_tokens=400)
        assert reply.finish_reason == "tool_calls", f"seed {seed}: {reply}"
        for call in reply.tool_calls:
            validate(call.arguments, SCHEMAS[call.name])
        assert len({c.id for c in reply.tool_calls}) == len(reply.tool_calls)
        counts.append(len(reply.tool_calls))
    assert max(counts) >= 2, counts


def test_json_schema_replies_validate(tiny_v3_engine):
    response_format = {"type": "json_schema", "json_schema": {"name": "event", "schema": EVENT}}
    for seed in SEEDS:
        reply = tiny_v3_engine.chat_completion(MESSAGES, response_format=response_format, seed=seed, **SAMPLING)
        assert reply.finish_reason == "stop", f"seed {seed}: {reply}"
        validate(json.loads(reply.content), EVENT)


def test_named_function_and_json_or_calls(tiny_v3_engine):
    choice = {"type": "function", "function": {"name": "add_event"}}
    response_format = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
    for seed in range(4):
        named = tiny_v3_engine.chat_completion(MESSAGES, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
                                               seed=seed, **SAMPLING)
        assert named.finish_reason == "tool_calls" and {c.name for c in named.tool_calls} == {"add_event"}
        # "auto" with a JSON response_format: either calls or the JSON, both valid
        either = tiny_v3_engine.chat_completion(MESSAGES, tools=TOOLS, response_format=response_format, seed=seed,
                                                **SAMPLING)
        if either.tool_calls:
            for call in either.tool_calls:
                validate(call.arguments, SCHEMAS[call.name])
        else:
            validate(json.loads(either.content), WEATHER)


def test_stream_gives_the_completion(tiny_v3_engine):
    for choice in ("any", "auto"):
        reply = tiny_v3_engine.chat_completion(MESSAGES, tools=TOOLS, tool_choice=choice, seed=3, **SAMPLING)
        chunks = list(tiny_v3_engine.chat_completion_stream(MESSAGES, tools=TOOLS, tool_choice=choice, seed=3,
                                                            **SAMPLING))
        assert "".join(c.content for c in chunks) == (reply.content or "")
        assert (chunks[-1].tool_calls, chunks[-1].finish_reason, chunks[-1].usage) == (
            reply.tool_calls, reply.finish_reason, reply.usage)


def test_budget_runs_out_before_the_grammar_ends(tiny_v3_engine):
    reply = tiny_v3_engine.chat_completion(MESSAGES, tools=TOOLS, tool_choice="any", seed=0, temperature=1.0,
                                           max_new_tokens=6)
    assert (reply.finish_reason, reply.tool_calls, len(reply.token_ids)) == ("length", (), 6)
    assert reply.content.startswith("[")


def test_free_chat_is_unchanged(tiny_v3_engine):
    """tool_choice "auto" without a response_format is free generation: the same text as chat()."""
    reply = tiny_v3_engine.chat_completion(MESSAGES, seed=1, temperature=0.7, max_new_tokens=8)
    assert reply.content == tiny_v3_engine.chat(MESSAGES, seed=1, temperature=0.7, max_new_tokens=8)
    assert reply.finish_reason == "length" and reply.usage.prompt_tokens == len(
        tiny_v3_engine.tokenizer.encode_chat(MESSAGES))


def test_batch_mixes_constrained_and_free(tiny_engine):
    """v1 engine (JSON mode needs no tool tokens): row 0 constrained, row 1 free, row 2 JSON object; each
    equals its prompt's run alone."""
    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    prompts, formats = ["Weather:", "Tell me a story", "JSON please:"], [schema, None, {"type": "json_object"}]
    settings = dict(temperature=1.0, seed=4, max_new_tokens=60)
    batch = tiny_engine.generate(prompts, response_format=formats, **settings)
    alone = [tiny_engine.generate(p, response_format=f, **settings) for p, f in zip(prompts, formats, strict=True)]
    assert [c.token_ids for c in batch] == [c.token_ids for c in alone]
    validate(json.loads(batch[0].text), WEATHER)
    assert batch[1].finish_reason == "length" and "{" not in batch[1].text[:1]
    if batch[2].finish_reason == "stop":
        assert isinstance(json.loads(batch[2].text), dict)
    else:
        assert batch[2].text.startswith("{")


def test_grammar_ends_the_reply_even_with_ignore_eos(tiny_engine):
    reply = tiny_engine.generate("Weather:", response_format={"type": "json_schema", "json_schema": {
        "name": "w", "schema": WEATHER}}, temperature=1.0, seed=1, max_new_tokens=60, ignore_eos=True)
    assert reply.finish_reason == "stop" and reply.token_ids[-1] == tiny_engine.tokenizer.eos_id
    validate(json.loads(reply.text), WEATHER)


def test_v1_engine_refuses_tools(tiny_engine):
    with pytest.raises(MixtralTrtError, match="need the v3 tokenizer"):
        tiny_engine.chat_completion([{"role": "user", "content": "hi"}], tools=TOOLS)
    with pytest.raises(MixtralTrtError, match="tool_choice='any' needs tools"):
        tiny_engine.chat_completion([{"role": "user", "content": "hi"}], tool_choice="any")
