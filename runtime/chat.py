"""Chat prompts: role/content messages -> the Mixtral [INST] ids mistral-common produces, with safe mode.

`safe_mode=True` puts Mistral's guardrail system prompt in front of the conversation, as Mistral's API
does for `safe_prompt`: it becomes the first system message, so with other system messages it comes
first and they follow after a blank line, all inside the user turn the instruct format assigns them to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.validate import as_text

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer

GUARDRAIL = ("Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid "
             "harmful, unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity.")


def with_safe_mode(messages: Sequence[Mapping[str, str]], safe_mode: bool) -> list[Mapping[str, str]]:
    if isinstance(messages, Mapping | str | bytes) or not isinstance(messages, Sequence):
        raise MixtralTrtError("chat: messages must be a list of {'role': ..., 'content': ...} dicts")
    for n, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise MixtralTrtError(f"chat: message {n} must be a {{'role': ..., 'content': ...}} dict, "
                                  f"got {type(m).__name__}")
        if isinstance(m.get("content"), str):  # text the tokenizer cannot take (lone surrogates from argv)
            as_text(f"chat: message {n} ({m.get('role')}) content", m["content"])
    return [{"role": "system", "content": GUARDRAIL}, *messages] if safe_mode else list(messages)


def chat_prompt(tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]], safe_mode: bool = False,
                tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
    """Ids of the conversation (with `tools`: v3 only), ready for the assistant's reply."""
    messages = with_safe_mode(messages, safe_mode)
    if len(messages) == int(safe_mode):
        raise MixtralTrtError("chat: the conversation has no messages")
    if isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
        raise MixtralTrtError("chat: the last message is the assistant's; add a user message to reply to")
    return tokenizer.encode_chat(messages, tools=tools)
