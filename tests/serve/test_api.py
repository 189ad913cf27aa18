"""The API as the real `openai` and `mistralai` clients see it. Oracle: the same request run directly
on the engine (`Engine.generate` on the chat prompt's ids): equal token counts, text and finish reason,
plain and streamed, greedy and seeded, with Mistral's safe_prompt, stop strings, and usage counts."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from mixtral_trt.runtime.chat import chat_prompt
from support.serving import API_KEY, MODEL, mistral_client, openai_client

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour ! Qui es-tu ?"}]


def solo(engine, messages=MESSAGES, safe_mode=False, **sampling):
    """The engine's own completion of the conversation (the oracle)."""
    return engine.generate(chat_prompt(engine.tokenizer, messages, safe_mode), **sampling)


def test_plain_and_streamed_chat_with_openai(server):
    client, eng = openai_client(server.url), server.engine
    expected = solo(eng, max_new_tokens=20, ignore_eos=True)
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert got.model == MODEL and got.object == "chat.completion" and got.id.startswith("chatcmpl-")
    choice = got.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == \
        ("assistant", expected.text, "length")
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == \
        (expected.prompt_tokens, 20, expected.prompt_tokens + 20)

    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20  # OpenAI's usage chunk
    assert len({c.id for c in chunks}) == 1


def test_mistral_client_safe_prompt_and_random_seed(server):
    client, eng = mistral_client(server.url), server.engine
    settings = dict(temperature=0.7, top_p=0.9, seed=1234, max_new_tokens=16, ignore_eos=True)
    expected = solo(eng, safe_mode=True, **settings)
    unsafe = solo(eng, safe_mode=False, **settings)
    assert expected.prompt_tokens > unsafe.prompt_tokens  # the guardrail prompt is in front
    got = client.chat.complete(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0.7, top_p=0.9,
                               random_seed=1234, safe_prompt=True, http_headers={"x-test": "1"})
    assert got.choices[0].message.content == expected.text and got.choices[0].finish_reason == "length"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (expected.prompt_tokens, 16)
    events = list(client.chat.stream(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0.7, top_p=0.9,
                                     random_seed=1234, safe_prompt=True))
    text = "".join(e.data.choices[0].delta.content or "" for e in events if e.data.choices)
    assert text == expected.text
    last = events[-1].data  # Mistral's API puts usage on the chunk that finishes the reply
    assert last.choices[0].finish_reason == "length" and last.usage.prompt_tokens == expected.prompt_tokens


def test_seeds_reproduce_and_differ(server):
    client = openai_client(server.url)

    def reply(seed):
        return client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, seed=seed,
                                              extra_body={"ignore_eos": True}).choices[0].message.content

    first = reply(7)
    assert reply(7) == first == solo(server.engine, temperature=1.0, seed=7, max_new_tokens=16, ignore_eos=True).text
    assert reply(8) != first


def test_stop_strings_cut_the_reply_and_never_stream(server):
    client, eng = openai_client(server.url), server.engine
    full = solo(eng, max_new_tokens=30, ignore_eos=True).text
    at = next(i for i in range(len(full) // 3, len(full) - 3) if full.find(full[i : i + 3]) == i and full[i] != " ")
    stop = full[at : at + 3]
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, temperature=0,
                                         stop=[stop, "never-there"], extra_body={"ignore_eos": True})
    assert got.choices[0].message.content == full[:at] and got.choices[0].finish_reason == "stop", (stop, full)
    streamed = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, temperature=0,
                                              stop=stop, stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == full[:at]


def test_completions_endpoint(server):
    client, eng = openai_client(server.url), server.engine
    expected = eng.generate("Once upon a time", max_new_tokens=10, ignore_eos=True)
    got = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0,
                                    extra_body={"ignore_eos": True})
    assert got.object == "text_completion" and got.choices[0].text == expected.text
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (expected.prompt_tokens, 10)
    ids = eng.tokenizer.encode("Le mélange")
    many = client.completions.create(model=MODEL, prompt=[ids, ids[:2]], max_tokens=6, temperature=0)
    assert [c.text for c in many.choices] == [c.text for c in eng.generate([ids, ids[:2]], max_new_tokens=6)]
    assert [c.index for c in many.choices] == [0, 1]
    pieces = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0,
                                       stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in pieces) == expected.text


def test_models_health_metrics_and_raw_sse(server):
    assert [m.id for m in openai_client(server.url).models.list().data] == [MODEL]
    health = httpx.get(server.url + "/health")  # open without a key, like /metrics (scrapers)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert last["choices"][0]["finish_reason"] and last["usage"]["completion_tokens"] >= 1
    text = httpx.get(server.url + "/metrics").text
    for name in ("mixtral_trt_requests_total{endpoint=\"chat\"}", "mixtral_trt_generation_tokens_total",
                 "mixtral_trt_queue_length", "mixtral_trt_time_to_first_token_seconds_bucket",
                 "mixtral_trt_generation_tokens_per_second", "mixtral_trt_engine_steps_total"):
        assert name in text, name
    generated = float(next(line.split()[-1] for line in text.splitlines()
                           if line.startswith("mixtral_trt_generation_tokens_total")))
    assert generated >= 4


@pytest.mark.parametrize("content", ["Hi", [{"type": "text", "text": "H"}, {"type": "text", "text": "i"}]])
def test_content_as_text_parts(server, content):
    client = openai_client(server.url)
    got = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                         max_tokens=5, temperature=0)
    assert got.choices[0].message.content == solo(server.engine, [{"role": "user", "content": "Hi"}],
                                                  max_new_tokens=5).text
