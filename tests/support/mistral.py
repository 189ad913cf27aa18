"""mistral-common, the oracle for chat encodings: its MistralTokenizer and ChatCompletionRequest."""

from __future__ import annotations

from mixtral_trt.chat.tokenizer import mistral_common_file


def mistral_tokenizer(version: str, finetuning: bool = False):
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mode = ValidationMode.finetuning if finetuning else ValidationMode.test
    return MistralTokenizer.from_file(str(mistral_common_file(version)), mode=mode)


def chat_request(conversation: list[tuple[str, str]], prefix_last: bool = False):
    """(role, content) pairs -> ChatCompletionRequest (`prefix_last`: the final assistant turn is continued)."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    messages = [kinds[role](content=content) for role, content in conversation]
    if prefix_last:
        messages[-1] = AssistantMessage(content=conversation[-1][1], prefix=True)
    return ChatCompletionRequest(messages=messages)


def message_dicts(conversation: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in conversation]


def openai_request(messages: list[dict], tools: list[dict] | None = None):
    """OpenAI-style messages and tools -> ChatCompletionRequest (mistral-common's own converter)."""
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    return ChatCompletionRequest.from_openai(messages=messages, tools=tools)
