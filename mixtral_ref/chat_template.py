"""The Mixtral instruct format ([INST] ... [/INST]) over role/content messages.

Written against mistral-common's rules for its v1 (Mixtral 8x7B) and v2/v3 (Mixtral 8x22B) instruct
tokenizers, so that `encode_chat` gives the ids `MistralTokenizer.encode_chat_completion` gives:
- system messages are taken out of the conversation and joined with "\\n\\n" into one system prompt,
  which is prepended (with "\\n\\n") to the FIRST user message in v1 and to the LAST user message in v2/v3;
- consecutive messages of one role are merged with "\\n\\n" (empty contents skipped); a conversation that
  does not start with a user message gets an empty one in front;
- v1 encodes each user turn as the text "[INST] {content} [/INST]"; v2/v3 wrap the encoded content in
  the [INST] / [/INST] control tokens; an assistant turn is its encoded text (v2/v3: trailing spaces
  removed) followed by EOS, except a final turn that is continued (`continue_final`);
- every SentencePiece call encodes one piece of text on its own (its own leading "▁").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_text

ROLES = ("system", "user", "assistant")
JOIN = "\n\n"
# Which role may follow which (mistral-common's validator, restricted to these three roles).
_ALLOWED_NEXT = {"system": set(ROLES), "user": set(ROLES), "assistant": {"user", "assistant"}}


def _validate(messages: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    if not messages:
        raise MixtralTrtError("chat: the conversation has no messages")
    out = []
    for n, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise MixtralTrtError(f"chat: message {n} must be a {{'role': ..., 'content': ...}} dict, "
                                  f"got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise MixtralTrtError(f"chat: message {n} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise MixtralTrtError(f"chat: message {n} ({role}) content must be a string")
        as_text(f"chat: message {n} ({role}) content", content)
        if role == "assistant" and not content:
            raise MixtralTrtError(f"chat: message {n} (assistant) is empty")
        if out and role not in _ALLOWED_NEXT[out[-1][0]]:
            raise MixtralTrtError(f"chat: message {n}: role {role!r} cannot follow {out[-1][0]!r}")
        out.append((role, content))
    if len(out) == 1 and out[0][0] == "assistant":
        raise MixtralTrtError("chat: a conversation must start with a user or system message")
    return out


def _normalize(messages: list[tuple[str, str]]) -> tuple[str | None, list[tuple[str, str]]]:
    """(system prompt, turns): system messages pulled out, consecutive same-role messages merged."""
    system = [c for r, c in messages if r == "system" and c]
    turns: list[tuple[str, list[str]]] = []
    previous = None
    for role, content in messages:
        if role != previous and role != "system":
            turns.append((role, []))
        if role != "system" and content:
            turns[-1][1].append(content)
        previous = role
    merged = [(role, JOIN.join(parts)) for role, parts in turns]
    if not merged or merged[0][0] != "user":
        merged.insert(0, ("user", ""))
    return (JOIN.join(system) if system else None), merged


def encode_chat(
    messages: Sequence[Mapping[str, str]],
    encode: Callable[[str], list[int]],  # raw SentencePiece: text -> ids, no BOS/EOS
    version: str,  # "v1" | "v2" | "v3"
    bos_id: int,
    eos_id: int,
    inst: tuple[int, int] | None,  # the [INST], [/INST] control ids (v2/v3), None for v1
    continue_final: bool = False,
) -> list[int]:
    """Token ids of a conversation, starting with BOS.

    A final assistant message is a complete turn (ends with EOS), or, with `continue_final`, the start
    of the reply the model is to continue (no EOS).
    """
    system, turns = _normalize(_validate(messages))
    users = [n for n, (role, _) in enumerate(turns) if role == "user"]
    system_turn = users[0] if version == "v1" else users[-1]
    ids = [bos_id]
    for n, (role, content) in enumerate(turns):
        if role == "user":
            if system and n == system_turn:
                content = system + JOIN + content
            if inst is None:
                ids += encode(f"[INST] {content} [/INST]")
            else:
                ids += [inst[0], *encode(content), inst[1]]
        else:
            ids += encode(content if version == "v1" else content.rstrip(" "))
            if not (continue_final and n == len(turns) - 1):
                ids.append(eos_id)
    return ids
