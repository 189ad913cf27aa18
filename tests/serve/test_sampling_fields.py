"""The sampling fields through the real `openai` client: `n` (seeded samples sharing one prefill, each equal to
the engine's own seeded reply with seed + i, streamed equal to non-streamed), `min_p`, `presence_penalty`,
`frequency_penalty`, `repetition_penalty`, `logit_bias` (each equal to the engine's reply with the same setting;
the runtime's processors are tested against HF and numpy in tests/runtime/test_sampling.py), and
`stream_options.include_usage`. Bad values are 400s naming the field while a concurrent request completes."""

from __future__ import annotations

import threading

import openai
import pytest

from mixtral_trt.runtime.chat import chat_prompt
from support.serving import MODEL, mistral_client, openai_client

MESSAGES = [{"role": "user", "content": "Tell me a story about a fox."}]
SEEDED = dict(temperature=1.0, seed=11)


def _solo(engine, **sampling):
    return engine.generate(chat_prompt(engine.tokenizer, MESSAGES), ignore_eos=True, **sampling)


def test_n_samples_share_a_prefill_and_reproduce(server):
    client, eng = openai_client(server.url), server.engine
    before = server.scheduler.stats.prefills
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, n=3, seed=11,
                                         extra_body={"ignore_eos": True})
    assert server.scheduler.stats.prefills == before + 1  # one prefill for the three samples
    texts = [c.message.content for c in sorted(got.choices, key=lambda c: c.index)]
    assert [c.index for c in got.choices] == [0, 1, 2]
    assert texts == [_solo(eng, max_new_tokens=10, temperature=1.0, seed=11 + i).text for i in range(3)]
    assert len(set(texts)) == 3
    assert got.usage.prompt_tokens == len(chat_prompt(eng.tokenizer, MESSAGES)) and got.usage.completion_tokens == 30
    again = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, n=3, seed=11,
                                           extra_body={"ignore_eos": True})
    assert [c.message.content for c in again.choices] == texts
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, n=3, seed=11,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))
    streamed = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
                for i in range(3)]
    assert streamed == texts
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == got.usage.model_dump()

    # completions: two prompts, two samples each: choice k * n + i
    prompts = ["Once upon a time", "The fox"]
    done = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, n=2, seed=5,
                                     extra_body={"ignore_eos": True})
    want = [eng.generate(eng.tokenizer.encode(p), max_new_tokens=6, temperature=1.0, seed=5 + i,
                         ignore_eos=True).text for p in prompts for i in range(2)]
    assert [c.text for c in sorted(done.choices, key=lambda c: c.index)] == want


def test_mistral_client_fields(server):
    """Mistral's client: n, presence / frequency penalties, random_seed, logprobs + top_logprobs (its shape needs
    token_id) map to the same fields."""
    client, eng = mistral_client(server.url), server.engine
    got = client.chat.complete(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=1.0, random_seed=3, n=2,
                               presence_penalty=0.5, frequency_penalty=0.5, logprobs=True, top_logprobs=2)
    for i, choice in enumerate(sorted(got.choices, key=lambda c: c.index)):
        want = eng.generate(chat_prompt(eng.tokenizer, MESSAGES), max_new_tokens=8, temperature=1.0, seed=3 + i,
                            presence_penalty=0.5, frequency_penalty=0.5, logprobs=2)
        assert choice.message.content == want.text
        assert [e.token_id for e in choice.logprobs.content] == want.token_ids
        assert [e.logprob for e in choice.logprobs.content] == pytest.approx([e.logprob for e in want.logprobs],
                                                                             abs=1e-5)
        assert [[t.token_id for t in e.top_logprobs] for e in choice.logprobs.content] == \
            [[t for t, _ in e.top] for e in want.logprobs]


@pytest.mark.parametrize("fields", [
    dict(min_p=0.3),
    dict(presence_penalty=1.5),
    dict(frequency_penalty=1.2, presence_penalty=-0.5),
    dict(repetition_penalty=3.0),
])
def test_sampling_fields_equal_the_engine(server, fields):
    client, eng = openai_client(server.url), server.engine
    extra = {k: v for k, v in fields.items() if k in ("min_p", "repetition_penalty")}
    openai_fields = {k: v for k, v in fields.items() if k not in extra}
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, **SEEDED, **openai_fields,
                                         extra_body={"ignore_eos": True, **extra})
    want = _solo(eng, max_new_tokens=16, **SEEDED, **fields)
    assert got.choices[0].message.content == want.text
    assert want.text != _solo(eng, max_new_tokens=16, **SEEDED).text  # the field changed the reply


def test_logit_bias_forces_a_token(server):
    client, eng = openai_client(server.url), server.engine
    token = eng.tokenizer.encode("fox", bos=False)[-1]
    got = client.completions.create(model=MODEL, prompt="A story:", max_tokens=5, temperature=0,
                                    logit_bias={str(token): 100}, logprobs=1, extra_body={"ignore_eos": True})
    want = eng.generate(eng.tokenizer.encode("A story:"), max_new_tokens=5, logit_bias={token: 100.0},
                        ignore_eos=True)
    assert want.token_ids == [token] * 5 and got.choices[0].text == want.text
    assert all(lp > -1e-3 for lp in got.choices[0].logprobs.token_logprobs)  # logprobs include the bias


BAD = [
    ("chat", dict(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("chat", dict(top_logprobs=3), "top_logprobs"),
    ("chat", dict(n=9), "n"),  # the server's batch limit is 8
    ("chat", dict(n=0), "n"),
    ("chat", dict(extra_body={"echo": True}), "echo"),
    ("chat", dict(presence_penalty=2.5), "presence_penalty"),
    ("chat", dict(frequency_penalty=-3), "frequency_penalty"),
    ("chat", dict(extra_body={"min_p": 1.5}), "min_p"),
    ("chat", dict(extra_body={"repetition_penalty": 0}), "repetition_penalty"),
    ("chat", dict(logit_bias={"5": 101}), "logit_bias"),
    ("chat", dict(extra_body={"prompt_logprobs": True}), "prompt_logprobs"),
    ("chat", dict(extra_body={"min_tokens": 3}), "min_tokens"),
    ("completions", dict(logprobs=21), "logprobs"),
    ("completions", dict(logprobs=True), "logprobs"),
    ("completions", dict(n=9), "n"),
    ("completions", dict(extra_body={"suffix": "x"}), "suffix"),
]


def test_bad_fields_are_400s_naming_them_while_others_are_served(server):
    client, eng = openai_client(server.url), server.engine
    want = _solo(eng, max_new_tokens=48).text
    result: dict[str, str] = {}

    def long_request() -> None:
        result["text"] = "".join(
            c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=48, temperature=0, stream=True,
                extra_body={"ignore_eos": True}) if c.choices)

    worker = threading.Thread(target=long_request)
    worker.start()
    for endpoint, fields, param in BAD:
        with pytest.raises(openai.BadRequestError) as refused:
            if endpoint == "chat":
                client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, **fields)
            else:
                client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, **fields)
        error = refused.value.body
        assert error["param"] == param, (fields, error)
        assert "\n" not in error["message"] and param.split("[")[0] in error["message"], error
    worker.join(120)
    assert result["text"] == want
