"""What goes wrong, as clients see it: a client that disconnects frees its row, a missing or wrong key is
401, a bad request or a prompt beyond the context is 400 with the runtime's one-line message, a full
queue is 429 in OpenAI's error JSON, and shutdown lets in-flight requests finish (or cancels them once
the grace period is over). Every case also checks that the server goes on serving."""

from __future__ import annotations

import json
import threading

import httpx2 as httpx
import openai
import pytest

from support.serving import API_KEY, MODEL, mistral_client, openai_client, start, wait_until

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "Tell me everything."}]


def _body(**extra):
    return {"model": MODEL, "messages": USER, "temperature": 0, "ignore_eos": True, **extra}


def _error(e: Exception) -> dict:
    return e.body if isinstance(e.body, dict) and "message" in e.body else e.body["error"]


def test_disconnect_cancels_the_request_and_frees_its_row(slow_engine):
    with start(slow_engine) as served:
        sched = served.scheduler
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=_body(max_tokens=200, stream=True)) as r:
            for n, _ in enumerate(line for line in r.iter_lines() if line.startswith("data: ")):
                if n == 3:
                    break  # leave after a few tokens: the connection closes
        wait_until(lambda: sched.stats.cancelled == 1 and sched.running == 0, what="the streamed request cancelled")
        assert sched.stats.generated_tokens < 50

        with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
            httpx.post(served.url + "/v1/chat/completions", json=_body(max_tokens=200), timeout=0.5)
        wait_until(lambda: sched.stats.cancelled == 2 and sched.running == 0, what="the plain request cancelled")
        assert sched.stats.finished == 0 and sched.stats.generated_tokens < 100
        done = openai_client(served.url).chat.completions.create(model=MODEL, messages=USER, max_tokens=3)
        assert done.usage.completion_tokens == 3 and sched._cache is None


def test_missing_or_wrong_key_is_401(server):
    for key in ("sk-wrong", None):
        with pytest.raises(openai.AuthenticationError) as e:
            openai_client(server.url, key).chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
        assert e.value.status_code == 401 and _error(e.value)["code"] == "invalid_api_key"
    r = httpx.post(server.url + "/v1/chat/completions", json={"not": "a request"})  # the key is checked first
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(Exception) as e:
        mistral_client(server.url, "sk-wrong").chat.complete(model=MODEL, messages=USER, max_tokens=2)
    assert getattr(e.value, "status_code", None) == 401, repr(e.value)
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/v1/models", headers=HEADERS).status_code == 200


@pytest.mark.parametrize("body, status, message, param", [
    (_body(temperature=-1), 400, "temperature=-1.0: must be a finite number >= 0 (0 is greedy)", "temperature"),
    (_body(top_p=0), 400, "top_p=0.0: must be in (0, 1]", "top_p"),
    (_body(max_tokens=-5), 400, "max_new_tokens=-5: must be an integer >= 0", "max_tokens"),
    (_body(n=9), 400, "n=9: must be between 1 and the server's batch limit 8", "n"),
    (_body(logprobs=True, top_logprobs=21), 400, "top_logprobs=21: must be between 0 and 20", "top_logprobs"),
    (_body(echo=True), 400, "echo: not supported by chat completions", "echo"),
    (_body(messages=[]), 400, "chat: the conversation has no messages", "messages"),
    (_body(messages=[{"role": "assistant", "content": "x"}]), 400, "chat: the last message is the assistant's",
     "messages"),
    (_body(max_tokens=100, messages=[{"role": "user", "content": "word " * 200}]), 400,
     "exceed the engine's context of 256 tokens", "messages"),
    (_body(messages=[{"role": "user", "content": "word " * 300}]), 400,
     "tokens leave no room in the engine's context of 256 tokens", "messages"),
    (_body(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), 400,
     "tools, tool calls and tool results need the v3 tokenizer", "tools"),  # this engine's tokenizer is v1
    (_body(tool_choice="sometimes"), 400, "tool_choice='sometimes': expected one of", "tool_choice"),
    ({"model": MODEL}, 400, "messages: Field required", "messages"),
    (_body(temperature="hot"), 400, "temperature: Input should be a valid number", "temperature"),
])
def test_bad_requests_are_400_with_one_line(server, body, status, message, param):
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=HEADERS)
    error = r.json()["error"]
    assert r.status_code == status and message in error["message"], error
    assert "\n" not in error["message"] and error["type"] == "invalid_request_error" and error["param"] == param


def test_bad_requests_through_the_clients(server):
    with pytest.raises(openai.BadRequestError) as e:
        openai_client(server.url).chat.completions.create(model=MODEL, messages=USER, max_tokens=100_000)
    assert "max_new_tokens 100000 exceed the engine's context of 256 tokens" in _error(e.value)["message"]
    with pytest.raises(Exception) as e:
        mistral_client(server.url).chat.complete(model=MODEL, messages=USER, temperature=-1.0)
    assert getattr(e.value, "status_code", None) == 400 and "temperature" in str(e.value.body), repr(e.value)
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=HEADERS)
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_a_full_queue_is_429_in_openai_shape(slow_engine, serve_engine):
    with start(slow_engine, max_batch=1, max_queue=1) as served:
        sched, client = served.scheduler, openai_client(served.url)
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=_body(max_tokens=200, stream=True)) as r:
            lines = r.iter_lines()
            next(line for line in lines if '"content":"' in line and '"content":""' not in line)  # A decodes
            waiting = {}
            b = threading.Thread(target=lambda: waiting.update(reply=client.chat.completions.create(
                model=MODEL, messages=USER, max_tokens=5, temperature=0)))
            b.start()
            wait_until(lambda: sched.waiting == 1, what="B waiting for the only row")
            with pytest.raises(openai.RateLimitError) as e:
                client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5)
            assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "1"
            assert _error(e.value) | {"message": ""} == {"message": "", "type": "requests", "param": None,
                                                         "code": "rate_limit_exceeded"}
            assert "1 requests are already waiting" in _error(e.value)["message"]
        b.join(30)  # A's client left: its row frees, B runs
    expected = serve_engine.chat(USER, max_new_tokens=5)
    assert waiting["reply"].choices[0].message.content == expected


def test_shutdown_lets_in_flight_requests_finish(slow_engine):
    with start(slow_engine, grace=30) as served:
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=_body(max_tokens=40, stream=True)) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            served.server.server.should_exit = True  # as on SIGTERM: stop accepting, drain
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]" and '"completion_tokens":40' in rest[-2]
        served.server.thread.join(30)
        assert not served.server.thread.is_alive() and not served.scheduler.alive
        with pytest.raises(httpx.ConnectError):
            httpx.get(served.url + "/health")


def test_shutdown_ends_the_streams_that_outlive_the_grace_period(slow_engine):
    """After the grace period every open stream gets a final chunk (finish_reason "abort", its usage) and
    [DONE]: the openai client reads a complete stream; a plain request in flight gets 503."""
    with start(slow_engine, grace=0.5) as served:
        client = openai_client(served.url)
        plain = {}
        thread = threading.Thread(target=lambda: plain.update(error=_raises(lambda: client.chat.completions.create(
            model=MODEL, messages=USER, max_tokens=240, temperature=0, extra_body={"ignore_eos": True}))))
        with httpx.stream("POST", served.url + "/v1/chat/completions", headers=HEADERS,
                          json=_body(max_tokens=240, stream=True)) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            thread.start()
            wait_until(lambda: served.scheduler.running == 2, what="both requests running")
            served.server.server.should_exit = True
            rest = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]  # no exception
        assert rest[-1] == "[DONE]"
        chunks = [json.loads(line) for line in rest[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
        assert 0 < chunks[-1]["usage"]["completion_tokens"] < 240
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
        thread.join(30)
        assert isinstance(plain["error"], openai.InternalServerError) and plain["error"].status_code == 503
        assert "shut down before the reply was finished" in _error(plain["error"])["message"]
        served.server.thread.join(30)
        assert not served.server.thread.is_alive() and not served.scheduler.alive
        assert served.scheduler.stats.cancelled == 2


def _raises(call):
    try:
        call()
    except Exception as e:
        return e
    return None
