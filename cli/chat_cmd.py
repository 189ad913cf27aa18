"""`mixtral-export chat ENGINE`: talk to an engine ([INST] format), interactively or one message at a time.

Interactive when stdin is a terminal (`/reset` starts over, `/exit` or Ctrl-D leaves); with `--message`,
or with the message piped on stdin, one reply is streamed and the command exits.
With `--tools`, a reply of tool calls prints one JSON line per call ({"id", "name", "arguments"});
interactively, the result of each call is then asked for and the model answers with them (tool_choice
"auto" for that answer). `--json` / `--json-schema` constrain the replies to JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_text, decode_text

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
from .structured_opts import JsonMode, JsonSchema, ToolChoice, Tools, read_tools, response_format, tool_choice


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
    tools: Tools = None,
    tool_choice_: ToolChoice = None,
    json_mode: JsonMode = False,
    json_schema: JsonSchema = None,
    device: Device = "auto",
) -> None:
    """Chat with an engine; replies are streamed."""
    from mixtral_trt import runtime

    params = sampling_params(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, ignore_eos)
    source = "--message"
    if message is None and not sys.stdin.isatty():
        message, source = _read_stdin().strip(), "stdin"
    if message is not None and not as_text(source, message).strip():
        raise MixtralTrtError(f"{source}: the message is empty; nothing to answer")
    if system is not None:
        as_text("--system", system)
    structured = {"tools": read_tools(tools), "tool_choice": tool_choice(tool_choice_),
                  "response_format": response_format(json_mode, json_schema)}
    if all(v is None for v in structured.values()):
        structured = None
    engine = runtime.load(engine_dir, device=device)
    history = [{"role": "system", "content": system}] if system else []
    if message is not None:
        _reply(engine, [*history, {"role": "user", "content": message}], safe_mode, params, structured)
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
        answer = _reply(engine, conversation, safe_mode, params, structured)
        conversation.append(answer)
        while answer.get("tool_calls"):  # the user gives each call's result; the model answers with them
            for call in answer["tool_calls"]:
                result = input(f"result of {call['function']['name']} [{call['id']}]> ")
                conversation.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                                     "content": result})
            answer = _reply(engine, conversation, safe_mode, params, {**structured, "tool_choice": "auto"})
            conversation.append(answer)


def _read_stdin() -> str:
    """stdin decoded as UTF-8 strictly: one-line error for anything else (not a traceback)."""
    raw = getattr(sys.stdin, "buffer", None)
    return decode_text("stdin", raw.read()) if raw is not None else sys.stdin.read()


def _reply(engine, messages: list[dict], safe_mode: bool, params, structured: dict | None) -> dict:
    """Stream one reply; the assistant message it adds to the conversation."""
    pieces = []
    if structured is None:
        for piece in engine.chat_stream(messages, safe_mode=safe_mode, params=params):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        return {"role": "assistant", "content": "".join(pieces) or " "}
    last = None
    for last in engine.chat_completion_stream(messages, safe_mode=safe_mode, params=params, **structured):
        pieces.append(last.content)
        print(last.content, end="", flush=True)
    if last is None or not last.tool_calls:
        print()
        return {"role": "assistant", "content": "".join(pieces) or " "}
    for call in last.tool_calls:
        print(json.dumps({"id": call.id, "name": call.name, "arguments": call.arguments}, ensure_ascii=False))
    return {"role": "assistant", "content": None, "tool_calls": [call.to_openai() for call in last.tool_calls]}
