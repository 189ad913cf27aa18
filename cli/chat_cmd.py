"""`mixtral-export chat ENGINE`: talk to an engine ([INST] format), interactively or one message at a time.

Interactive when stdin is a terminal (`/reset` starts over, `/exit` or Ctrl-D leaves); with `--message`,
or with the message piped on stdin, one reply is streamed and the command exits.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .sampling_opts import (
    Device,
    IgnoreEos,
    MaxNewTokens,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    sampling_params,
)


@app.command("chat")
def chat(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory (mixtral-export build).")],
    message: Annotated[str | None, typer.Option(help="One user message: print the reply and exit.")] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt for the conversation.")] = None,
    safe_mode: Annotated[bool, typer.Option(help="Prepend Mistral's guardrail system prompt.")] = False,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = 0.0,
    top_k: TopK = 0,
    top_p: TopP = 1.0,
    repetition_penalty: RepetitionPenalty = 1.0,
    seed: Seed = None,
    stop: Stop = None,
    ignore_eos: IgnoreEos = False,
    device: Device = "auto",
) -> None:
    """Chat with an engine; replies are streamed."""
    from mixtral_trt import runtime
    from mixtral_trt.common.errors import MixtralTrtError
    from mixtral_trt.common.validate import as_text

    params = sampling_params(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, ignore_eos)
    source = "--message"
    if message is None and not sys.stdin.isatty():
        message, source = _read_stdin().strip(), "stdin"
    if message is not None and not as_text(source, message).strip():
        raise MixtralTrtError(f"{source}: the message is empty; nothing to answer")
    if system is not None:
        as_text("--system", system)
    engine = runtime.load(engine_dir, device=device)
    history = [{"role": "system", "content": system}] if system else []
    if message is not None:
        _reply(engine, [*history, {"role": "user", "content": message}], safe_mode, params)
        return
    print(f"chatting with {engine_dir} ({engine.backend}, {engine.dtype}); /reset starts over, /exit leaves",
          file=sys.stderr)
    conversation = list(history)
    while True:
        try:
            text = input(">>> ").strip()
        except EOFError:
            print()
            return
        except UnicodeDecodeError:
            print("error: not valid UTF-8; type the message again", file=sys.stderr)
            continue
        if text == "/exit":
            return
        if text == "/reset":
            conversation = list(history)
            continue
        if not text:
            continue
        conversation.append({"role": "user", "content": text})
        answer = _reply(engine, conversation, safe_mode, params)
        conversation.append({"role": "assistant", "content": answer or " "})


def _read_stdin() -> str:
    """stdin decoded as UTF-8 strictly: one-line error for anything else (not a traceback)."""
    from mixtral_trt.common.validate import decode_text

    raw = getattr(sys.stdin, "buffer", None)
    return decode_text("stdin", raw.read()) if raw is not None else sys.stdin.read()


def _reply(engine, messages: list[dict[str, str]], safe_mode: bool, params) -> str:
    pieces = []
    for piece in engine.chat_stream(messages, safe_mode=safe_mode, params=params):
        pieces.append(piece)
        print(piece, end="", flush=True)
    print()
    return "".join(pieces)
