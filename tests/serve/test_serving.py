"""`Serving` without HTTP or FastAPI: raw bodies in, replies out, driven on a plain asyncio loop. Oracle: the
engine's own reply to the same conversation."""

from __future__ import annotations

import asyncio
import json

import pytest

from mixtral_trt.runtime.scheduler import Scheduler
from mixtral_trt.serve.serving import HTTPError, JSONReply, Serving, StreamReply

USER = [{"role": "user", "content": "Bonjour"}]


async def _never() -> None:
    await asyncio.Event().wait()


@pytest.fixture(scope="module")
def serving(serve_engine):
    scheduler = Scheduler(serve_engine).start()
    yield Serving(serve_engine, scheduler, "tiny", 0)
    scheduler.shutdown(0)


def test_chat_plain_and_streamed_without_http(serving, serve_engine):
    expected = serve_engine.chat(USER, max_new_tokens=6, ignore_eos=True)
    raw = json.dumps({"messages": USER, "max_tokens": 6, "temperature": 0, "ignore_eos": True}).encode()

    async def run():
        plain = await serving.chat(raw, _never)
        streamed = await serving.chat(raw[:-1] + b', "stream": true}', _never)
        assert isinstance(streamed, StreamReply)
        return plain, [chunk async for chunk in streamed.chunks]

    plain, chunks = asyncio.run(run())
    assert isinstance(plain, JSONReply) and plain.status == 200
    assert plain.body["choices"][0]["message"]["content"] == expected
    assert chunks[-1] == b"data: [DONE]\n\n"
    events = [json.loads(c.removeprefix(b"data: ")) for c in chunks[:-1]]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == expected
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert not serving.live  # every ticket closed


def test_refusals_raise_http_errors(serving):
    async def refused(raw: bytes) -> HTTPError:
        with pytest.raises(HTTPError) as e:
            await serving.chat(raw, _never)
        return e.value

    e = asyncio.run(refused(json.dumps({"messages": USER, "top_p": 0}).encode()))
    assert (e.status, e.param) == (400, "top_p") and e.message == "top_p=0.0: must be in (0, 1]"
    assert serving.health().status == 200
