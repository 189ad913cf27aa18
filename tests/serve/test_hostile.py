"""Hostile and careless clients (issue 25): malformed keys and bodies, huge and slow requests, unbounded asks.
Each answer is checked in OpenAI's error shape with the field named, and the server keeps serving; the oracle
for the requests that succeed is the engine's own reply to the same request."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx2 as httpx
import openai
import pytest

from mixtral_trt.serve.limits import Limits
from support.serving import API_KEY, MODEL, openai_client, start, wait_until

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "Tell me everything."}]
SHAPE = {"message", "type", "param", "code"}


def _body(**extra):
    return {"model": MODEL, "messages": USER, "temperature": 0, "max_tokens": 4, **extra}


def _error(r: httpx.Response, status: int, param: str | None = None) -> str:
    """The error's message, after checking the status, OpenAI's shape and the field named."""
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) == SHAPE and error["param"] == param and "\n" not in error["message"], error
    return error["message"]


def _raw(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the server, read until it closes the connection (or `timeout`)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


def _errors_counted(url: str, status: int) -> float:
    text = httpx.get(url + "/metrics").text
    line = next((x for x in text.splitlines() if x.startswith(f'mixtral_trt_errors_total{{status="{status}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.fixture(scope="module")
def strict(serve_engine):
    """A server with small limits (bodies of 64 KiB, 1 s to send headers or a body) and an API key."""
    limits = Limits(max_body_bytes=64 * 1024, header_timeout=1.0, body_timeout=1.0)
    with start(serve_engine, api_key=API_KEY, max_queue=4, limits=limits) as served:
        yield served


# ---- 2, 3: the key first, as bytes -------------------------------------------------------------------------
@pytest.mark.parametrize("header", [b"Bearer sk-t\xe9st", b"Bearer " + API_KEY.encode() + b"\xff", b"Bearer",
                                    b"Basic " + API_KEY.encode(), b"\xe9\xe9", b"Bearer " + API_KEY.encode() + b" x"])
def test_malformed_keys_are_401(server, header):
    r = httpx.post(server.url + "/v1/chat/completions", json=_body(), headers={"Authorization": header})
    assert "API key" in _error(r, 401) and r.headers["www-authenticate"] == "Bearer"


def test_the_key_is_checked_before_the_body_is_read(strict):
    for body in (b"{not json", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"):
        r = httpx.post(strict.url + "/v1/chat/completions", content=body)
        _error(r, 401)
    # a body announced and never sent: 401 at once, not 408 after the body deadline (1 s)
    reply = _raw(strict.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
                 timeout=5)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:100]
    ok = openai_client(strict.url).chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
    assert ok.usage.completion_tokens == 2


# ---- 4: body size, work off the event loop ------------------------------------------------------------------
def test_a_body_over_the_limit_is_413(strict):
    big = _body(messages=[{"role": "user", "content": "x" * 100_000}])
    r = httpx.post(strict.url + "/v1/chat/completions", json=big, headers=HEADERS)
    assert "larger than the server's limit of 65536 bytes" in _error(r, 413)
    reply = _raw(strict.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
                 b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n{", timeout=5)
    assert reply.startswith(b"HTTP/1.1 413") and b'"type":"invalid_request_error"' in reply.replace(b" ", b"")


def test_the_event_loop_answers_while_a_request_is_prepared(server, monkeypatch):
    """The chat template and tokenizer of a request are held on an event; meanwhile /health and /v1/models
    answer (they could not if the preparation ran on the event loop)."""
    tokenizer = server.engine.tokenizer
    entered, release = threading.Event(), threading.Event()
    encode_chat = tokenizer.encode_chat

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return encode_chat(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode_chat", held)
    result = {}
    big = _body(messages=[{"role": "user", "content": "word " * 200}], max_tokens=3)
    thread = threading.Thread(target=lambda: result.update(r=httpx.post(server.url + "/v1/chat/completions",
                                                                        json=big, headers=HEADERS, timeout=60)))
    thread.start()
    try:
        assert entered.wait(30)
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200
        assert httpx.get(server.url + "/v1/models", headers=HEADERS, timeout=10).status_code == 200
    finally:
        release.set()
        thread.join(60)
    assert result["r"].status_code == 200 and result["r"].json()["usage"]["completion_tokens"] == 3


# ---- 5: bounded asks --------------------------------------------------------------------------------------------
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("extra, param, message", [
    (dict(stop=[f"s{n}" for n in range(17)]), "stop", "stop: 17 stop strings, the server takes at most 16"),
    (dict(stop=["x" * 257]), "stop", "stop: 257 characters, the server takes at most 256"),
    (dict(stop=["a", "x" * 300]), "stop", "stop[1]: 300 characters"),
    (dict(stop_token_ids=list(range(300))), "stop_token_ids", "stop_token_ids: 300 ids"),
    (dict(logit_bias={str(n): 1 for n in range(1100)}), "logit_bias", "logit_bias: 1100 entries"),
    (dict(tools=[TOOL] * 129), "tools", "tools: 129 tools, the server takes at most 128"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {f"p{n}": {"type": "string"} for n in range(5000)}}}}]), "tools",
     "tools[0].function.parameters: "),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "enum": ["v" * 100] * 1000}}}), "response_format", "response_format: "),
])
def test_unbounded_asks_are_400(server, extra, param, message):
    r = httpx.post(server.url + "/v1/chat/completions", json=_body(**extra), headers=HEADERS)
    assert message in _error(r, 400, param)


def test_many_stop_strings_within_the_limit_work(server):
    """16 stop strings, one of which the reply contains: cut where the engine's own reply has it."""
    eng = server.engine
    full = eng.chat(USER, max_new_tokens=20, ignore_eos=True)
    stop = full[6:9]
    got = openai_client(server.url).chat.completions.create(
        model=MODEL, messages=USER, max_tokens=20, temperature=0, stop=[f"zz{n}qq" for n in range(15)] + [stop],
        extra_body={"ignore_eos": True})
    assert got.choices[0].message.content == full[: full.find(stop)] and got.choices[0].finish_reason == "stop"


# ---- 6: grammars checked before admission; 400s, not 500s -----------------------------------------------------
@pytest.mark.parametrize("extra, param, message", [
    (dict(max_tokens=3, max_completion_tokens=4), "max_tokens", "max_tokens and max_completion_tokens differ"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}),
     "response_format", "response_format: $ref '#' leads back to itself: the schema admits no value"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/properties/a"}}, "required": ["a"]}}}),
     "response_format", "$ref '#/properties/a' leads back to itself"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "pattern": "^a{1000000}$"}}}), "response_format", "repetition count 1000000 is above"),
])
def test_grammar_and_field_conflicts_are_400(server, extra, param, message):
    r = httpx.post(server.url + "/v1/chat/completions", json=_body(**extra), headers=HEADERS)
    text = _error(r, 400, param)
    assert message in text and "Tokens" not in text and "Parser" not in text and len(text) < 200, text


# ---- 7: every error in OpenAI's shape, the field named --------------------------------------------------------
@pytest.mark.parametrize("method, path, content, status, param, message", [
    ("POST", "/v1/chat/completions", b'{"messages": "\xff\xfe"}', 400, None, "body: not UTF-8 text"),
    ("POST", "/v1/chat/completions", b"[" * 5000 + b"]" * 5000, 400, None, "body: JSON nested deeper than 64"),
    ("POST", "/v1/chat/completions", json.dumps(_body(x=_nested(70))).encode(), 400, None,
     "body: JSON nested deeper than 64"),
    ("POST", "/v1/chat/completions", b"{not json", 400, None, "body: invalid JSON (Expecting property name"),
    ("POST", "/v1/chat/completions", b"[1]", 400, None, "body: expected a JSON object, got list"),
    ("GET", "/v1/nothing", b"", 404, None, "GET /v1/nothing: Not Found"),
    ("GET", "/v1/chat/completions", b"", 405, None, "GET /v1/chat/completions: Method Not Allowed"),
    ("POST", "/v1/chat/completions", json.dumps(_body(messages=[{"role": "wizard", "content": "x"}])).encode(), 400,
     "messages[0]", "chat: message 0 has role 'wizard'"),
    ("POST", "/v1/chat/completions", json.dumps(_body(messages=[{"content": "x"}])).encode(), 400,
     "messages[0].role", "messages[0].role: Field required"),
    ("POST", "/v1/chat/completions", json.dumps(_body(max_tokens=True)).encode(), 400, "max_tokens",
     "max_tokens: a number, not a boolean"),
    ("POST", "/v1/chat/completions", json.dumps(_body(temperature=False)).encode(), 400, "temperature",
     "temperature: a number, not a boolean"),
    ("POST", "/v1/chat/completions", json.dumps(_body(logit_bias={"x1": 3})).encode(), 400, "logit_bias",
     "logit_bias: key 'x1' is not a token id"),
    ("POST", "/v1/chat/completions", json.dumps(_body(logit_bias={"99999": 3})).encode(), 400, "logit_bias",
     "logit_bias: token id 99999 is outside the vocabulary [0, 32000)"),
    ("POST", "/v1/chat/completions", json.dumps(_body(logit_bias={"5": 300})).encode(), 400, "logit_bias",
     "logit_bias=300.0: must be in [-100, 100]"),
    ("POST", "/v1/completions", json.dumps({"prompt": [[1, 2]] * 65, "max_tokens": 1}).encode(), 400, "prompt",
     "prompt: 65 prompts, but the server queues at most 64 at once"),
    ("POST", "/v1/completions", json.dumps({"prompt": [1, True]}).encode(), 400, "prompt[1]",
     "prompt[1]: a number, not a boolean"),
])
def test_errors_have_openai_shape_and_name_the_field(server, method, path, content, status, param, message):
    before = _errors_counted(server.url, status)
    r = httpx.request(method, server.url + path, content=content, headers=HEADERS)
    assert message in _error(r, status, param)
    assert _errors_counted(server.url, status) == before + 1


def test_an_unhandled_error_is_a_counted_500(server, monkeypatch):
    serving = server.app.state.serving

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(serving, "models", broken)
    before = _errors_counted(server.url, 500)
    r = httpx.get(server.url + "/v1/models", headers=HEADERS)
    assert _error(r, 500) == "internal error: RuntimeError"
    assert _errors_counted(server.url, 500) == before + 1
    monkeypatch.undo()
    assert httpx.get(server.url + "/v1/models", headers=HEADERS).status_code == 200


# ---- 9: slow clients, the developer role, logit_bias -------------------------------------------------------------
def test_slow_headers_and_bodies_time_out(strict):
    """A client sending its headers a byte at a time is cut off after the header deadline (1 s); one that
    stops sending its body gets 408. Bounded: the socket reads give up after 10 s."""
    host, port = strict.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        start, closed = time.monotonic(), False
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            s.settimeout(0.1)
            try:
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            s.settimeout(10)
        assert closed and time.monotonic() - start < 8, time.monotonic() - start
    reply = _raw(strict.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                 b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n{\"mess", timeout=10)
    assert reply.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in reply
    assert httpx.get(strict.url + "/health").status_code == 200


def test_developer_role_is_the_system_role(server):
    eng = server.engine
    expected = eng.chat([{"role": "system", "content": "Be brief."}, *USER], max_new_tokens=6, ignore_eos=True)
    got = openai_client(server.url).chat.completions.create(
        model=MODEL, messages=[{"role": "developer", "content": "Be brief."}, *USER], max_tokens=6, temperature=0,
        extra_body={"ignore_eos": True})
    assert got.choices[0].message.content == expected


def test_logit_bias_steers_the_reply(server):
    """Oracle: the engine's own greedy reply with the same bias; +100 on one token makes every token it."""
    from mixtral_trt.runtime.chat import chat_prompt

    eng, client = server.engine, openai_client(server.url)
    ids = chat_prompt(eng.tokenizer, USER)
    free = eng.generate(ids, max_new_tokens=6, ignore_eos=True)
    banned = free.token_ids[0]
    expected = eng.generate(ids, max_new_tokens=6, ignore_eos=True, logit_bias={banned: -100, 1000: 5.0})
    got = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, temperature=0,
                                         logit_bias={str(banned): -100, "1000": 5.0}, extra_body={"ignore_eos": True})
    assert got.choices[0].message.content == expected.text and expected.token_ids[0] != banned
    forced = client.completions.create(model=MODEL, prompt=ids, max_tokens=4, temperature=0.9, seed=1,
                                       logit_bias={"1000": 100})
    assert forced.choices[0].text == eng.tokenizer.decode([1000] * 4)


def test_the_server_still_serves(server, strict):
    for served in (server, strict):
        done = openai_client(served.url).chat.completions.create(model=MODEL, messages=USER, max_tokens=3)
        assert done.usage.completion_tokens == 3
    with pytest.raises(openai.BadRequestError):
        openai_client(server.url).chat.completions.create(model=MODEL, messages=USER, max_tokens=3, stop=["x"] * 40)
    wait_until(lambda: server.scheduler.running == 0, what="no request left running")
