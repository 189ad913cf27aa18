"""Types are checked where the API is entered (runtime/prompts.py, runtime/sampling.py, common/validate.py;
issue 10, item 8): each wrong type is one MixtralTrtError naming the argument, never a raw TypeError /
KeyError / AttributeError, and never silently reinterpreted (a bytes prompt read as ids, a stop string
split into characters, True taken as a token count). NumPy integers and floats are numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.sampling import SamplingParams


def _one_line_error(call, *words):
    with pytest.raises(MixtralTrtError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize(("prompts", "words"), [
    (b"hello", ("prompt", "bytes")),
    (bytearray(b"hi"), ("prompt", "bytes")),
    ([1.0, 2.5], ("prompts[0]", "float")),
    ([1, 2.5], ("prompt", "token 1", "2.5")),
    ([1, True], ("prompt", "token 1", "True")),
    ([True, 5], ("prompts[0]", "bool")),
    (None, ("prompt", "NoneType")),
    (5, ("prompt", "int")),
    ([[1, 2], None], ("prompts[1]", "NoneType")),
    (["hi", b"there"], ("prompts[1]", "bytes")),
    (np.array([1.5, 2.0]), ("prompt", "float64")),
    (np.array([[1, 2]], dtype=bool), ("prompts[0]", "bool")),
    ("caf\udce9", ("prompt", "UTF-8")),  # an argv byte that is not UTF-8 arrives as a lone surrogate
])
def test_bad_prompts_are_one_error_naming_them(tiny_engine, prompts, words):
    _one_line_error(lambda: tiny_engine.generate(prompts, max_new_tokens=1), *words)
    _one_line_error(lambda: list(tiny_engine.stream(prompts, max_new_tokens=1)), *words)


@pytest.mark.parametrize(("messages", "words"), [
    (["hi"], ("message 0", "str")),
    ([{"role": "user", "content": "hi"}, None], ("message 1", "NoneType")),
    ([{"role": "user", "content": b"hi"}], ("message 0", "content")),
    ([{"role": "user", "content": "caf\udce9"}], ("message 0", "UTF-8")),
    ("hi", ("messages must be a list",)),
    (None, ("messages must be a list",)),
    (b"hi", ("messages must be a list",)),
])
def test_bad_chat_messages_are_one_error(tiny_engine, messages, words):
    _one_line_error(lambda: tiny_engine.chat(messages, max_new_tokens=1), *words)


def test_params_of_the_wrong_type_are_named(tiny_engine):
    _one_line_error(lambda: tiny_engine.generate("hi", "greedy"), "params", "SamplingParams", "str")


@pytest.mark.parametrize(("settings", "words"), [
    (dict(max_new_tokens=True), ("max_new_tokens=True",)),
    (dict(max_new_tokens=3.0), ("max_new_tokens=3.0",)),
    (dict(top_k=False), ("top_k=False",)),
    (dict(seed=True), ("seed=True",)),
    (dict(temperature=True), ("temperature=True",)),
    (dict(temperature="0.7"), ("temperature='0.7'",)),
    (dict(top_p=float("nan")), ("top_p=nan",)),
    (dict(stop=5), ("stop=5",)),
    (dict(stop=b"ent"), ("stop=b'ent'",)),
    (dict(stop=["ok", 3]), ("stop=",)),
    (dict(stop_token_ids=5), ("stop_token_ids=5",)),
    (dict(stop_token_ids=[2, 2.0]), ("stop_token_ids=2.0",)),
    (dict(ignore_eos="yes"), ("ignore_eos='yes'",)),
])
def test_bad_settings_are_one_error_naming_them(settings, words):
    _one_line_error(lambda: SamplingParams(**settings), *words)


def test_numpy_numbers_are_numbers_and_come_back_as_python_values():
    p = SamplingParams(max_new_tokens=np.int64(3), top_k=np.int32(5), temperature=np.float32(0.5),
                       top_p=np.float64(0.9), seed=np.uint8(7), stop_token_ids=[np.int64(2)])
    assert (p.max_new_tokens, p.top_k, p.seed, p.stop_token_ids) == (3, 5, 7, (2,))
    assert type(p.max_new_tokens) is int and type(p.temperature) is float and p.temperature == 0.5


def test_one_stop_string_is_one_stop_string(tiny_engine):
    assert SamplingParams(stop="ent").stop == ("ent",)  # not ("e", "n", "t")
    free = tiny_engine.generate("The capital of France", max_new_tokens=12, ignore_eos=True)
    cut = free.text[2:5]
    stopped = tiny_engine.generate("The capital of France", max_new_tokens=12, ignore_eos=True, stop=cut)
    assert stopped.finish_reason == "stop" and stopped.stop_reason == cut, (free.text, stopped)
    assert stopped.text == free.text[: free.text.index(cut)]


def test_numpy_token_counts_and_ids_work(tiny_engine):
    want = tiny_engine.generate([1, 415, 5565], max_new_tokens=3)
    got = tiny_engine.generate(np.array([1, 415, 5565], dtype=np.int32), max_new_tokens=np.int64(3))
    assert got.token_ids == want.token_ids and len(got.token_ids) == 3
    batch = tiny_engine.generate(np.array([[1, 415, 5565]]), max_new_tokens=np.int64(3))
    assert isinstance(batch, list) and batch[0].token_ids == want.token_ids


def test_a_tiny_temperature_is_the_greedy_choice_not_nan(tiny_engine):
    greedy = tiny_engine.generate("Mixtral routes", max_new_tokens=6, ignore_eos=True)
    cold = tiny_engine.generate("Mixtral routes", max_new_tokens=6, ignore_eos=True, temperature=1e-320, seed=0)
    assert cold.token_ids == greedy.token_ids
