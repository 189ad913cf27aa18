"""`mixtral-export serve`: the real command in a subprocess answers the openai client with the engine's
own reply, takes its API key from the environment, and on Ctrl-C (SIGINT) or SIGTERM shuts down and exits 130
as every command does (README, Reliability); a bad engine directory is a one-line error with exit code 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from support.serving import openai_client, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_answers_and_stops_on_a_signal(tiny_engine, tiny_engine_dir, signum):
    port = _free_port()
    cli = Path(sys.executable).with_name("mixtral-export")
    env = {**os.environ, "MIXTRAL_TRT_API_KEY": "sk-from-env"}
    proc = subprocess.Popen([str(cli), "serve", str(tiny_engine_dir), "--port", str(port), "--max-batch", "2",
                             "--model-name", "tiny", "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(url + "/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=120, what="the server to start")
        messages = [{"role": "user", "content": "Bonjour"}]
        got = openai_client(url, "sk-from-env").chat.completions.create(model="tiny", messages=messages,
                                                                        max_tokens=8, temperature=0)
        assert got.choices[0].message.content == tiny_engine.chat(messages, max_new_tokens=8)
        assert httpx.get(url + "/v1/models").status_code == 401  # the key came from the environment
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
        assert err.strip().endswith("error: interrupted"), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_bad_engine_is_one_line(cli, tmp_path):
    result = cli("serve", tmp_path / "nothing-here")
    assert result.code == 2 and result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert str(tmp_path / "nothing-here") in result.err


@pytest.mark.parametrize(("args", "words"), [
    (("--prefix-cache-gb", "1e9"), ("--prefix-cache-gb=1e+09", "larger than", "memory available")),
    (("--prefix-cache-gb", "-1"), ("--prefix-cache-gb=-1", "must be a number > 0")),
    (("--prefill-chunk", "0"), ("--prefill-chunk=0", "'auto' or 'none'")),
    (("--prefill-chunk", "lots"), ("--prefill-chunk=lots",)),
])
def test_serve_bad_cache_and_chunk_options_are_one_line(cli, tiny_engine_dir, args, words):
    from support.cli_checks import one_line_error

    one_line_error(cli("serve", tiny_engine_dir, "--port", "1", *args), 2, *words)
