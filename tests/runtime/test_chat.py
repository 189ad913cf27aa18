"""Engine.chat: prompts equal mistral-common's v1 encodings (system, multi-turn, non-ASCII), safe mode
adds exactly Mistral's guardrail system prompt, and the reply is the generated text."""

from __future__ import annotations

import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.chat import GUARDRAIL, chat_prompt
from support.mistral import chat_request, message_dicts, mistral_tokenizer

CONVERSATIONS = {
    "system": [("system", "Answer in French."), ("user", "What is a mixture of experts?")],
    "multi-turn": [("user", "Name a colour."), ("system", "Be short."), ("assistant", "Blue."),
                   ("user", "Another one?"), ("assistant", "Green, then."), ("user", "And a third")],
    "non-ascii": [("system", "Réponds en japonais 🇯🇵"), ("user", "Ça va ? 東京タワーはどこ？ Ωμέγα ½ ✓")],
}
GUARDRAIL_TEXT = ("Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid "
                  "harmful, unethical, prejudiced, or negative content. Ensure replies promote fairness and "
                  "positivity.")


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_chat_prompt_equals_mistral_common(tiny_engine, name):
    conversation = CONVERSATIONS[name]
    expected = mistral_tokenizer("v1").encode_chat_completion(chat_request(conversation)).tokens
    assert chat_prompt(tiny_engine.tokenizer, message_dicts(conversation)) == expected


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_safe_mode_prepends_exactly_the_guardrail(tiny_engine, name):
    assert GUARDRAIL == GUARDRAIL_TEXT
    conversation = CONVERSATIONS[name]
    safe = chat_prompt(tiny_engine.tokenizer, message_dicts(conversation), safe_mode=True)
    expected = mistral_tokenizer("v1").encode_chat_completion(chat_request([("system", GUARDRAIL_TEXT),
                                                                             *conversation])).tokens
    assert safe == expected
    text, plain = tiny_engine.tokenizer.decode(safe), tiny_engine.tokenizer.decode(
        chat_prompt(tiny_engine.tokenizer, message_dicts(conversation)))
    assert text.count(GUARDRAIL_TEXT) == 1 and GUARDRAIL_TEXT not in plain
    own_system = next(c for r, c in conversation if r == "system")
    assert f"{GUARDRAIL_TEXT}\n\n{own_system}" in text  # the guardrail first, the user's system prompt after it
    assert text.replace(f"{GUARDRAIL_TEXT}\n\n", "", 1) == plain


def test_chat_is_the_generated_reply(tiny_engine):
    messages = message_dicts(CONVERSATIONS["system"])
    prompt = chat_prompt(tiny_engine.tokenizer, messages, safe_mode=True)
    reply = tiny_engine.chat(messages, safe_mode=True, max_new_tokens=12, temperature=0.7, seed=2)
    assert reply == tiny_engine.generate(prompt, max_new_tokens=12, temperature=0.7, seed=2).text
    assert "".join(tiny_engine.chat_stream(messages, safe_mode=True, max_new_tokens=12, temperature=0.7,
                                           seed=2)) == reply
    assert reply != tiny_engine.chat(messages, max_new_tokens=12, temperature=0.7, seed=2)  # the prompt differs


@pytest.mark.parametrize(("messages", "match"), [
    ([], "no messages"),
    ({"role": "user", "content": "hi"}, "must be a list"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message is the assistant"),
    ([{"role": "robot", "content": "hi"}], "role 'robot'"),
])
def test_bad_conversations_are_user_errors(tiny_engine, messages, match):
    with pytest.raises(MixtralTrtError, match=match):
        tiny_engine.chat(messages, max_new_tokens=2)
