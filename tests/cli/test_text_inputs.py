"""`generate` and `chat` with text that is not UTF-8, a near-zero temperature, no new tokens and an empty
message (issue 10, items 7 and 10): one line and exit 2 for what cannot be answered, the right answer for
what can, never a traceback.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli_checks import one_line_error

CLI = str(Path(sys.executable).with_name("mixtral-export"))


class _Pipe(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


def _stdin(data: bytes) -> _Pipe:
    return _Pipe(io.BytesIO(data), encoding="utf-8")


@pytest.mark.parametrize(("args", "words"), [
    (["generate", "{engine}", "--prompt", "caf\udce9"], ["--prompt", "not valid UTF-8"]),
    (["generate", "{engine}", "--prompt", "ok", "--prompt", "\udcff\udcfe"], ["--prompt", "not valid UTF-8"]),
    (["chat", "{engine}", "--message", "caf\udce9"], ["--message", "not valid UTF-8"]),
    (["chat", "{engine}", "--message", "hi", "--system", "\udcff"], ["--system", "not valid UTF-8"]),
    (["generate", "{engine}", "--prompt", "hi", "--stop", "\udcff"], ["stop", "not valid UTF-8"]),
    (["chat", "{engine}", "--message", "   "], ["--message", "empty"]),
    (["inspect", "{checkpoint}", "--chat", "caf\udce9"], ["--chat", "not valid UTF-8"]),
])
def test_text_arguments_that_are_not_utf8_or_empty(tiny_engine_dir, tiny_ckpt, cli, args, words):
    """Invalid bytes in argv reach Python as lone surrogates (what the in-process runner passes here)."""
    args = [a.replace("{engine}", str(tiny_engine_dir)).replace("{checkpoint}", str(tiny_ckpt)) for a in args]
    one_line_error(cli(*args), 2, *words)


@pytest.mark.parametrize(("data", "words"), [
    (b"\xff\xfe caf\xe9", ["stdin", "not valid UTF-8"]),
    (b"", ["stdin", "empty"]),
    (b" \n\n", ["stdin", "empty"]),
])
def test_piped_stdin_that_is_not_utf8_or_empty(tiny_engine_dir, cli, monkeypatch, data, words):
    monkeypatch.setattr(sys, "stdin", _stdin(data))
    one_line_error(cli("chat", tiny_engine_dir, "--max-new-tokens", "2"), 2, *words)


def test_non_utf8_argv_bytes_in_a_real_process(tiny_engine_dir):
    result = subprocess.run([CLI, "generate", str(tiny_engine_dir), "--prompt", b"\xff\xfe abc"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--prompt: not valid UTF-8" in result.stderr


def test_a_near_zero_temperature_is_greedy(tiny_engine_dir, cli):
    args = ["generate", tiny_engine_dir, "--prompt", "Mixtral routes", "--max-new-tokens", "6", "--ignore-eos"]
    greedy = cli(*args)
    cold = cli(*args, "--temperature", "1e-320", "--seed", "0")
    assert greedy.code == cold.code == 0, cold.err
    assert cold.out == greedy.out and cold.out.strip()


def test_no_new_tokens_finishes_by_length(tiny_engine_dir, cli):
    result = cli("generate", tiny_engine_dir, "--prompt", "hi", "--max-new-tokens", "0")
    assert result.code == 0 and "0 tokens" in result.err and "finish: length" in result.err, result.err
