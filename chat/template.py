"""The Mixtral instruct format ([INST] ... [/INST]) over chat messages, with tools for v3.

Written against mistral-common's rules for its v1 (Mixtral 8x7B) and v2/v3 (Mixtral 8x22B) instruct
tokenizers, so that `encode_chat` gives the ids `MistralTokenizer.encode_chat_completion` gives (messages
are checked and normalized by messages.py):
- the system prompt is prepended (with "\\n\\n") to the FIRST user message in v1 and to the LAST in v2/v3;
- v1 encodes each user turn as the text "[INST] {content} [/INST]"; v2/v3 wrap the encoded content in
  the [INST] / [/INST] control tokens; an assistant turn is its encoded text (v2/v3: trailing spaces
  removed) followed by EOS, except a final turn that is continued (`continue_final`);
- v3 tools: `[AVAILABLE_TOOLS] json.dumps([{"type": "function", "function": {name, description,
  parameters}}]) [/AVAILABLE_TOOLS]` right before the [INST] of the last user turn; an assistant turn of
  tool calls is `[TOOL_CALLS] json.dumps([{name, arguments, id}]) EOS`; each tool result is
  `[TOOL_RESULTS] json.dumps({content, call_id}) [/TOOL_RESULTS]` (JSON with non-ASCII kept);
- every SentencePiece call encodes one piece of text on its own (its own leading "▁").
v1 has no tool tokens: tools, tool calls and tool results are errors there (and v2, whose tool format
differs, is not supported for them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError

from .messages import JOIN, NAME, Turn, json_value, normalize

TOOL_TOKENS = ("[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")


def encode_chat(
    messages: Sequence[Mapping[str, Any]],
    encode: Callable[[str], list[int]],  # raw SentencePiece: text -> ids, no BOS/EOS
    version: str,  # "v1" | "v2" | "v3"
    bos_id: int,
    eos_id: int,
    control: Mapping[str, int],  # control token ids by piece ("[INST]", "[TOOL_CALLS]", ...)
    continue_final: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[int]:
    """Token ids of a conversation, starting with BOS.

    A final assistant message is a complete turn (ends with EOS), or, with `continue_final`, the start
    of the reply the model is to continue (no EOS).
    """
    system, turns = normalize(messages)
    uses_tools = bool(tools) or any(t.role == "tool" or t.calls for t in turns)
    if uses_tools and version != "v3":
        raise MixtralTrtError(f"chat: tools, tool calls and tool results need the v3 tokenizer (Mixtral 8x22B); "
                              f"this one is {version}, which has no tool tokens")
    tools_ids = [control["[AVAILABLE_TOOLS]"], *encode(tools_json(tools)), control["[/AVAILABLE_TOOLS]"]] \
        if tools else []
    users = [n for n, turn in enumerate(turns) if turn.role == "user"]
    system_turn = users[0] if version == "v1" else users[-1]
    ids = [bos_id]
    for n, turn in enumerate(turns):
        if turn.role == "user":
            content = system + JOIN + turn.content if system and n == system_turn else turn.content
            if version == "v1":
                ids += encode(f"[INST] {content} [/INST]")
            else:
                ids += (tools_ids if n == users[-1] else []) + [control["[INST]"], *encode(content), control["[/INST]"]]
        elif turn.role == "tool":
            result = json.dumps({"content": json_value(turn.content), "call_id": turn.call_id}, ensure_ascii=False)
            ids += [control["[TOOL_RESULTS]"], *encode(result), control["[/TOOL_RESULTS]"]]
        else:
            ids += _assistant(turn, encode, version, control)
            if not (continue_final and n == len(turns) - 1):
                ids.append(eos_id)
    return ids


def _assistant(turn: Turn, encode: Callable[[str], list[int]], version: str, control: Mapping[str, int]) -> list[int]:
    if turn.calls:
        calls = [{"name": c.name, "arguments": json_value(c.arguments), "id": c.id} for c in turn.calls]
        return [control["[TOOL_CALLS]"], *encode(json.dumps(calls, ensure_ascii=False))]
    return encode(turn.content if version == "v1" else turn.content.rstrip(" "))


def tools_json(tools: Sequence[Mapping[str, Any]] | None) -> str:
    """The [AVAILABLE_TOOLS] text of OpenAI-style tools (checked)."""
    return json.dumps([{"type": "function", "function": fn} for fn in check_tools(tools)], ensure_ascii=False)


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The functions of OpenAI-style tools as {name, description, parameters}; a malformed tool is an error."""
    if tools is None:
        return []
    if isinstance(tools, Mapping | str):
        raise MixtralTrtError("tools: expected a list of {'type': 'function', 'function': {...}}")
    out, seen = [], set()
    for n, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or tool.get("type", "function") != "function":
            raise MixtralTrtError(f"tools: tool {n} must be {{'type': 'function', 'function': {{'name', "
                                  "'description', 'parameters'}}")
        name, description, parameters = fn.get("name"), fn.get("description") or "", fn.get("parameters")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise MixtralTrtError(f"tools: tool {n} name {name!r} must be 1-64 characters a-z A-Z 0-9 _ -")
        if name in seen:
            raise MixtralTrtError(f"tools: two tools are named {name!r}")
        if not isinstance(description, str):
            raise MixtralTrtError(f"tools: tool {name} description must be a string")
        parameters = {} if parameters is None else parameters
        if not isinstance(parameters, Mapping):
            raise MixtralTrtError(f"tools: tool {name} parameters must be a JSON schema object")
        seen.add(name)
        out.append({"name": name, "description": description, "parameters": dict(parameters)})
    return out
