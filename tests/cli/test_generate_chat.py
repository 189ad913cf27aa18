"""`mixtral-export generate` and `chat`: the streamed text equals the library's, batches, one-shot and
piped and interactive chat, and user errors as one line with exit code 2."""

from __future__ import annotations

import io
import sys

import pytest


def test_generate_streams_the_library_text(cli, tiny_engine, tiny_engine_dir):
    sampling = ("--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.9", "--seed", "5")
    result = cli("generate", tiny_engine_dir, "--prompt", "Bonjour à tous,", *sampling)
    assert result.code == 0, result.err
    expected = tiny_engine.generate("Bonjour à tous,", max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5)
    assert result.out == expected.text + "\n"
    assert "12 tokens" in result.err and "finish: length" in result.err


def test_generate_a_batch(cli, tiny_engine, tiny_engine_dir):
    result = cli("generate", tiny_engine_dir, "--prompt", "One", "--prompt", "Two three", "--max-new-tokens", "6")
    assert result.code == 0, result.err
    texts = [c.text for c in tiny_engine.generate(["One", "Two three"], max_new_tokens=6)]
    assert result.out == f"[0] {texts[0]}\n[1] {texts[1]}\n"


def test_chat_message_equals_engine_chat(cli, tiny_engine, tiny_engine_dir):
    result = cli("chat", tiny_engine_dir, "--message", "Qui es-tu ?", "--system", "Sois bref.", "--safe-mode",
                 "--max-new-tokens", "10")
    assert result.code == 0, result.err
    messages = [{"role": "system", "content": "Sois bref."}, {"role": "user", "content": "Qui es-tu ?"}]
    assert result.out == tiny_engine.chat(messages, safe_mode=True, max_new_tokens=10) + "\n"


def test_chat_reads_a_piped_message(cli, tiny_engine, tiny_engine_dir, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\n"))
    result = cli("chat", tiny_engine_dir, "--max-new-tokens", "8")
    assert result.code == 0, result.err
    assert result.out == tiny_engine.chat([{"role": "user", "content": "Hello there"}], max_new_tokens=8) + "\n"


def test_interactive_chat_keeps_the_conversation(cli, tiny_engine, tiny_engine_dir, monkeypatch):
    lines = iter(["First question", "Second question", "/reset", "Fresh start", "/exit"])
    monkeypatch.setattr(sys, "stdin", type("Tty", (io.StringIO,), {"isatty": lambda self: True})())
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    result = cli("chat", tiny_engine_dir, "--max-new-tokens", "6")
    assert result.code == 0, result.err
    first = tiny_engine.chat([{"role": "user", "content": "First question"}], max_new_tokens=6)
    second = tiny_engine.chat([{"role": "user", "content": "First question"}, {"role": "assistant", "content": first},
                               {"role": "user", "content": "Second question"}], max_new_tokens=6)
    fresh = tiny_engine.chat([{"role": "user", "content": "Fresh start"}], max_new_tokens=6)
    assert result.out == f"{first}\n{second}\n{fresh}\n"


@pytest.mark.parametrize(("args", "match"), [
    (("generate", "{engine}", "--prompt", "hi", "--top-p", "0"), "top_p=0.0: must be in (0, 1]"),
    (("generate", "{engine}", "--prompt", "word " * 300), "exceed the engine's context of 256 tokens"),
    (("chat", "{engine}", "--message", "hi", "--repetition-penalty", "-1"), "repetition_penalty=-1.0"),
    (("generate", "{missing}", "--prompt", "hi"), "no such engine directory"),
])
def test_user_errors_are_one_line_exit_2(cli, tiny_engine_dir, tmp_path, args, match):
    args = [a.format(engine=tiny_engine_dir, missing=tmp_path / "nope") for a in args]
    result = cli(*args)
    assert result.code == 2, result.out + result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1 and match in result.err, result.err
