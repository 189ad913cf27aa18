"""Constrained decoding without an engine: a Sampler with a grammar constraint, drawing at temperature 1
from random logits over the real 32000 (v1) and 32768 (v3) vocabularies, always writes JSON that jsonschema
(the oracle) accepts; masks never let a control token stand for text; banned tokens are never drawn;
grammars that cannot be enforced, and a missing llguidance, are one-line user errors."""

from __future__ import annotations

import json
import sys

import jsonschema
import numpy as np
import pytest

from mixtral_trt.chat import Tokenizer
from mixtral_trt.chat.tokenizer import mistral_common_file
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.chat_completion import prepare_chat, response_constraint
from mixtral_trt.runtime.constrained import BannedTokens
from mixtral_trt.runtime.sampling import Sampler, SamplingParams
from mixtral_trt.runtime.tool_calls import parse_calls

# Bounded (maxLength, maxItems, integer ranges, enums) so that a random walk ends within MAX_TOKENS.
SCHEMAS = {
    "weather": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"],
        "additionalProperties": False},
    "nested-arrays": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 10},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3}},
            "required": ["name", "tags"], "additionalProperties": False},
        "active": {"type": "boolean"}}, "required": ["user", "active"], "additionalProperties": False},
    "anyOf-null": {"type": "object", "properties": {"value": {"anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 99}, {"type": "string", "maxLength": 5}, {"type": "null"}]}},
        "required": ["value"], "additionalProperties": False},
    "formats-pattern": {"type": "object", "properties": {
        "day": {"type": "string", "format": "date"}, "id": {"type": "string", "format": "uuid"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["day", "id", "code"], "additionalProperties": False},
    "refs": {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -3, "maximum": 3}},
                              "required": ["x"], "additionalProperties": False}},
             "type": "array", "items": {"$ref": "#/$defs/pt"}, "minItems": 1, "maxItems": 2},
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMAS["weather"]}},
         {"type": "function", "function": {"name": "book", "parameters": SCHEMAS["nested-arrays"]}}]
MAX_TOKENS = 200
SEEDS = range(5)


@pytest.fixture(scope="module", params=["v1", "v3"])
def tokenizer(request):
    return Tokenizer(mistral_common_file(request.param))


def walk(tokenizer: Tokenizer, constraint, seed: int, temperature: float = 1.0) -> list[int]:
    """Draw until EOS from random logits [V] (N(0, 3), fresh each step) through a constrained Sampler."""
    rng = np.random.default_rng(1000 + seed)
    sampler = Sampler(SamplingParams(temperature=temperature, seed=seed), [tokenizer.bos_id], constraint)
    ids: list[int] = []
    while len(ids) < MAX_TOKENS and (not ids or ids[-1] != tokenizer.eos_id):
        ids.append(sampler(rng.normal(0, 3, tokenizer.vocab_size).astype(np.float32)))
    assert sampler.finished == (ids[-1] == tokenizer.eos_id)
    return ids


def validate(value, schema):
    jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("name", SCHEMAS)
def test_sampled_json_validates(tokenizer, name):
    schema = SCHEMAS[name]
    factory = response_constraint(tokenizer, {"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    for seed in SEEDS:
        ids = walk(tokenizer, factory(), seed)
        assert ids[-1] == tokenizer.eos_id, f"seed {seed}: no EOS within {MAX_TOKENS} tokens"
        assert not set(ids[:-1]) & set(tokenizer.special_ids)
        text = tokenizer.decode(ids)
        validate(json.loads(text), schema)


def test_greedy_takes_the_best_allowed_token(tokenizer):
    factory = response_constraint(tokenizer, {"type": "json_object"})
    logits = np.zeros(tokenizer.vocab_size, np.float32)
    brace = tokenizer.sp.piece_to_id("▁{")
    logits[[tokenizer.sp.piece_to_id("Hello"), brace]] = [9.0, 5.0]  # "Hello" is not JSON: the next best is
    assert Sampler(SamplingParams(), [1], factory())(logits) == brace


def test_control_tokens_never_stand_for_text(tokenizer):
    """Inside a JSON string every text token is allowed but no special one; EOS only once the value is done."""
    constraint = response_constraint(tokenizer, {"type": "json_object"})()
    prefix = tokenizer.encode('{"a": "', bos=False)
    for token in prefix:
        assert constraint.allowed()[token]
        constraint.advance(token)
    allowed = constraint.allowed()
    assert not allowed[list(tokenizer.special_ids)].any()
    assert allowed.sum() > 0.9 * tokenizer.vocab_size
    for token in tokenizer.encode('x"}', bos=False)[1:]:  # without the "▁x" prefix: "x" then '"}'
        constraint.advance(token)
    assert np.flatnonzero(constraint.allowed()).tolist() == [tokenizer.eos_id]
    constraint.advance(tokenizer.eos_id)
    assert constraint.terminated


def test_forced_tool_calls_validate():
    """tool_choice "any" on the v3 vocabulary: [TOOL_CALLS] first, then one call (parallel_tool_calls=False)
    whose arguments validate."""
    tokenizer = Tokenizer(mistral_common_file("v3"))
    request = prepare_chat(tokenizer, [{"role": "user", "content": "Weather?"}], TOOLS, "any", None,
                           parallel_tool_calls=False)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for seed in SEEDS:
        ids = walk(tokenizer, request.constraint(), seed)
        assert ids[0] == tokenizer.control_tokens["[TOOL_CALLS]"] and ids[-1] == tokenizer.eos_id
        calls = parse_calls(tokenizer.decode(ids), list(schemas), np.random.default_rng(seed))
        assert calls and len(calls) == 1, tokenizer.decode(ids)
        for call in calls:
            validate(call.arguments, schemas[call.name])


def test_banned_tokens_are_never_drawn():
    tokenizer = Tokenizer(mistral_common_file("v3"))
    calls = tokenizer.control_tokens["[TOOL_CALLS]"]
    logits = np.zeros(tokenizer.vocab_size, np.float32)
    logits[calls] = 50.0
    for seed in SEEDS:
        sampler = Sampler(SamplingParams(temperature=1.0, seed=seed), [1], BannedTokens(tokenizer.vocab_size, (calls,)))
        assert sampler(logits) != calls
    request = prepare_chat(tokenizer, [{"role": "user", "content": "Weather?"}], TOOLS, "none", None)
    assert not request.constraint().allowed()[calls] and request.tool_names == ()


@pytest.mark.parametrize(("response_format", "tools", "match"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}},
     None, r"^response_format: .*uniqueItems"),
    (None, [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
     r"^tools: f parameters: .*not"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, None, "json_schema needs"),
    ({"type": "xml"}, None, "expected {'type': 'text' | 'json_object' | 'json_schema'"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strng"}}}, None, "strng"),
])
def test_unenforceable_requests_are_user_errors(response_format, tools, match):
    tokenizer = Tokenizer(mistral_common_file("v3"))
    with pytest.raises(MixtralTrtError, match=match) as error:
        prepare_chat(tokenizer, [{"role": "user", "content": "hi"}], tools, "any" if tools else None, response_format)
    assert "\n" not in str(error.value)


def test_a_forced_call_cannot_also_be_json():
    tokenizer = Tokenizer(mistral_common_file("v3"))
    with pytest.raises(MixtralTrtError, match="response_format cannot be combined with tool_choice='any'"):
        prepare_chat(tokenizer, [{"role": "user", "content": "hi"}], TOOLS, "any", {"type": "json_object"})


def test_missing_llguidance_is_a_clear_error(monkeypatch):
    tokenizer = Tokenizer(mistral_common_file("v1"))
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance -> ImportError
    with pytest.raises(MixtralTrtError, match=r"needs llguidance: pip install 'mixtral-trt\[constrained\]'"):
        response_constraint(tokenizer, {"type": "json_object"})
    assert response_constraint(tokenizer, {"type": "text"}) is None  # free text needs nothing
