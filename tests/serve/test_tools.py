"""Function calling and JSON output through the server (v3 tokenizer engine, random weights, so only the
grammar makes the replies calls or JSON). Oracle: `Engine.chat_completion` of the same request alone —
equal calls (names, arguments, ids), content and finish reason — plus jsonschema on the arguments, for
plain and streamed replies, with the openai and mistralai clients, and mixed with a free request."""

from __future__ import annotations

import enum
import json
import threading
from typing import Annotated, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from support.serving import MODEL, mistral_client, openai_client, start

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 12},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                           "parameters": WEATHER}}]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
SETTINGS = dict(temperature=1.0, seed=3, max_tokens=80)
SOLO = dict(temperature=1.0, seed=3, max_new_tokens=80)


@pytest.fixture(scope="module")
def v3_server(tiny_v3_engine_dir):
    from mixtral_trt import runtime

    engine = runtime.load(tiny_v3_engine_dir)
    with start(engine) as served:
        yield served


def test_forced_tool_call_plain_and_streamed(v3_server):
    eng, client = v3_server.engine, openai_client(v3_server.url)
    expected = eng.chat_completion(MESSAGES, tools=TOOLS, tool_choice="any", parallel_tool_calls=False, **SOLO)
    assert expected.finish_reason == "tool_calls", expected
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                         parallel_tool_calls=False, **SETTINGS)
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert calls == [(c.id, c.name, c.arguments) for c in expected.tool_calls]
    jsonschema.validate(calls[0][2], WEATHER)
    assert got.usage.completion_tokens == expected.usage.completion_tokens

    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                                 parallel_tool_calls=False, stream=True, **SETTINGS))
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # calls are not text
    last = chunks[-1].choices[0]
    assert last.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in last.delta.tool_calls] == calls


def test_json_schema_output_and_mistral_client(v3_server):
    eng = v3_server.engine
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
    expected = eng.chat_completion(MESSAGES, response_format=fmt, **SOLO)
    got = openai_client(v3_server.url).chat.completions.create(model=MODEL, messages=MESSAGES, response_format=fmt,
                                                               **SETTINGS)
    assert got.choices[0].message.content == expected.content
    jsonschema.validate(json.loads(got.choices[0].message.content), WEATHER)

    forced = eng.chat_completion(MESSAGES, tools=TOOLS, tool_choice="any", parallel_tool_calls=False, **SOLO)
    reply = mistral_client(v3_server.url).chat.complete(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                                        tool_choice="any", parallel_tool_calls=False,
                                                        temperature=1.0, random_seed=3, max_tokens=80)
    assert forced.finish_reason == "tool_calls", forced
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == \
        (forced.tool_calls[0].id, forced.tool_calls[0].name, forced.tool_calls[0].arguments)


def test_constrained_and_free_requests_share_steps(v3_server):
    eng, client = v3_server.engine, openai_client(v3_server.url)
    fmt = {"type": "json_object"}
    expected = [eng.chat_completion(MESSAGES, tools=TOOLS, tool_choice="any", parallel_tool_calls=False, **SOLO),
                eng.chat_completion(MESSAGES, response_format=fmt, **SOLO),
                eng.chat_completion(MESSAGES, **SOLO)]
    kinds = [dict(tools=TOOLS, tool_choice="required", parallel_tool_calls=False), dict(response_format=fmt), {}]
    got = [None] * 3
    barrier = threading.Barrier(3)

    def call(n):
        barrier.wait()
        got[n] = client.chat.completions.create(model=MODEL, messages=MESSAGES, **kinds[n], **SETTINGS).choices[0]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [c.function.arguments for c in got[0].message.tool_calls] == \
        [json.dumps(c.arguments, ensure_ascii=False) for c in expected[0].tool_calls]
    assert [got[n].message.content for n in (1, 2)] == [expected[n].content for n in (1, 2)]
    assert [g.finish_reason for g in got] == [e.finish_reason for e in expected]


# ---- pydantic-generated tools, as openai.pydantic_function_tool and instructor make them ---------------------
# (bounded strings and lists: the random weights would otherwise fill them until max_tokens)
Short = Annotated[str, Field(max_length=8)]


class Color(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Point(BaseModel):
    x: int
    y: int


class SetColor(BaseModel):
    color: Color


class MoveTo(BaseModel):
    target: Point


class Shape(BaseModel):
    color: Color
    points: Annotated[list[Point], Field(max_length=3)]
    label: Short | None = None


class Node(BaseModel):  # recursive: children are Nodes
    name: Short
    children: Annotated[list[Node], Field(max_length=2)]


class Chain(BaseModel):  # recursive through an optional field
    value: int
    next: Chain | None = None


class Person(BaseModel):
    name: Short
    age: Annotated[int, Field(ge=0, le=120)] | None = None
    role: Literal["admin", "user"]


class Item(BaseModel):
    sku: Short
    quantity: Annotated[int, Field(ge=1, le=9)]


class Order(BaseModel):
    items: Annotated[list[Item], Field(min_length=1, max_length=3)]
    express: bool


class Address(BaseModel):
    city: Short
    where: Point


class Customer(BaseModel):
    person: Person
    address: Address


class Filter(BaseModel):
    tags: Annotated[list[Color], Field(max_length=3)]
    limit: int | None = None
    ratio: float


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: Annotated[int, Field(ge=1, le=9)]


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Adopt(BaseModel):
    pet: Cat | Dog


PYDANTIC_MODELS = [SetColor, MoveTo, Shape, Node, Chain, Person, Order, Customer, Filter, Adopt]


@pytest.mark.parametrize("model", PYDANTIC_MODELS, ids=lambda m: m.__name__)
def test_pydantic_tools_forced_calls_validate(v3_server, model):
    """Every forced call (required with two seeds, named with a third; temperature 1) finishes as a call whose arguments
    validate against the tool's own schema ($defs, enums, nested and recursive models) and load as the model."""
    import openai

    tool = openai.pydantic_function_tool(model)
    schema = tool["function"]["parameters"]
    client = openai_client(v3_server.url)
    named = {"type": "function", "function": {"name": model.__name__}}
    for seed, choice in ((0, "required"), (1, "required"), (2, named)):
        got = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[tool], tool_choice=choice,
                                             temperature=1.0, seed=seed, max_tokens=400)
        reply = got.choices[0]
        assert reply.finish_reason == "tool_calls", (seed, choice, reply)
        for call in reply.message.tool_calls:
            arguments = json.loads(call.function.arguments)
            jsonschema.validate(arguments, schema)
            model.model_validate(arguments)


def test_tools_keep_their_own_root(v3_server):
    """Two tools whose `$defs` share a name with different meanings, and one recursive through `"$ref": "#"`:
    each call (forced, temperature 1) validates against its own tool's schema."""
    letters = {"$defs": {"C": {"enum": ["a", "b"]}}, "type": "object", "properties": {"c": {"$ref": "#/$defs/C"}},
               "required": ["c"], "additionalProperties": False}
    numbers = {"$defs": {"C": {"type": "integer", "minimum": 5, "maximum": 7}}, "type": "object",
               "properties": {"c": {"$ref": "#/$defs/C"}}, "required": ["c"], "additionalProperties": False}
    tree = {"type": "object", "properties": {"v": {"enum": [1, 2, 3]},
                                             "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 1}},
            "required": ["v", "kids"], "additionalProperties": False}
    schemas = {"letters": letters, "numbers": numbers, "tree": tree}
    tools = [{"type": "function", "function": {"name": name, "parameters": schema}} for name, schema in schemas.items()]
    client, seen = openai_client(v3_server.url), set()
    for seed in range(4):
        got = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=tools, tool_choice="required",
                                             parallel_tool_calls=False, temperature=1.0, seed=seed,
                                             max_tokens=400).choices[0]
        assert got.finish_reason == "tool_calls", got
        for call in got.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
            seen.add(call.function.name)
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=tools, max_tokens=400, seed=9,
                                         tool_choice={"type": "function", "function": {"name": "tree"}}).choices[0]
    assert got.finish_reason == "tool_calls" and {c.function.name for c in got.message.tool_calls} == {"tree"}
    for call in got.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), tree)
    assert len(seen) >= 2, seen
