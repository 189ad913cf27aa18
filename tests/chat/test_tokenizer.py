"""`Tokenizer` against mistral-common: raw encode/decode, and `encode_chat` against the full
`MistralTokenizer.encode_chat_completion` (our [INST] template is written independently of it)."""

from __future__ import annotations

import shutil

import pytest

from mixtral_trt.chat import Tokenizer
from mixtral_trt.chat.tokenizer import mistral_common_file
from mixtral_trt.mixtral_ref import MixtralTrtError, get_preset
from support.mistral import chat_request as _request
from support.mistral import message_dicts as _dicts
from support.mistral import mistral_tokenizer as _mistral_common

CONVERSATIONS = {
    "single": [("user", "Hello")],
    "system": [("system", "You are terse."), ("user", "What is 2+2?")],
    "multi-turn": [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello! How can I help? "),
        ("user", "Name a prime."),
        ("assistant", "7"),
        ("user", "Another?"),
    ],
    "non-ascii": [("user", "Où est la gare ? 日本語のテキスト, emoji 😀🚀, Ωμέγα, ꙮ 𝔘")],
    "merged-roles": [
        ("user", "a"),
        ("user", ""),
        ("user", "b"),
        ("assistant", "x"),
        ("assistant", "y"),
        ("user", "c"),
    ],
    "systems-everywhere": [
        ("system", "S1"),
        ("system", ""),
        ("system", "S2"),
        ("assistant", "starts"),
        ("user", "q"),
        ("system", "S3"),
        ("user", "r"),
    ],
    "only-system": [("system", "nothing else")],
    "system-last": [("user", "  spaced  "), ("system", "late rules")],
    "empty-user": [("user", "")],
    "whitespace": [("user", "line1\nline2\n\n\ttab  "), ("assistant", "trailing   "), ("user", " lead")],
}


@pytest.fixture(scope="module", params=["v1", "v3"])
def version(request):
    return request.param


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_encode_chat_equals_mistral_common(name, version):
    conversation = CONVERSATIONS[name]
    expected = _mistral_common(version).encode_chat_completion(_request(conversation)).tokens
    got = Tokenizer(mistral_common_file(version)).encode_chat(_dicts(conversation))
    assert got == expected, f"{version} {name}:\nours  {got}\ntheirs {expected}"


def test_final_assistant_turn_and_continuation(version):
    conversation = [*CONVERSATIONS["multi-turn"], ("assistant", "Eleven.  ")]
    tok = Tokenizer(mistral_common_file(version))
    complete = _mistral_common(version, finetuning=True).encode_chat_completion(_request(conversation)).tokens
    assert tok.encode_chat(_dicts(conversation)) == complete
    assert complete[-1] == tok.eos_id
    prefix = _mistral_common(version).encode_chat_completion(_request(conversation, prefix_last=True)).tokens
    assert tok.encode_chat(_dicts(conversation), continue_final=True) == prefix
    assert prefix[-1] != tok.eos_id


def test_v3_uses_control_tokens_v1_uses_text(version):
    tok = Tokenizer(mistral_common_file(version))
    ids = tok.encode_chat([{"role": "user", "content": "hi"}])
    if version == "v3":
        assert (
            ids[:2] == [tok.bos_id, tok.control_tokens["[INST]"]] and ids[-1] == tok.control_tokens["[/INST]"]
        )
        assert "[TOOL_CALLS]" in tok.control_tokens
    else:
        assert "[INST]" not in tok.control_tokens and tok.decode(ids) == "[INST] hi [/INST]"


@pytest.mark.parametrize(
    "text", ["Hello world", "  leading spaces", "héllo 😀 日本語\nnew line", "ꙮ 𝔘 \u200b", ""]
)
def test_encode_decode_equal_mistral_common(text, version):
    theirs = _mistral_common(version).instruct_tokenizer.tokenizer
    tok = Tokenizer(mistral_common_file(version))
    for bos, eos in [(True, False), (False, True), (False, False)]:
        assert tok.encode(text, bos=bos, eos=eos) == theirs.encode(text, bos=bos, eos=eos)
    ids = tok.encode(text, eos=True)
    assert tok.decode(ids) == theirs.decode(ids) == text


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": None}],
        [{"role": "assistant", "content": "alone"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}],
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "system", "content": "s"},
        ],
    ],
)
def test_invalid_conversations_are_user_errors(bad, version):
    with pytest.raises(MixtralTrtError, match="^chat: "):
        Tokenizer(mistral_common_file(version)).encode_chat(bad)


def test_stream_decoder_never_splits_characters(version):
    tok = Tokenizer(mistral_common_file(version))
    text = "Zoë says 日本語 ꙮ𝔘 😀🚀 — done."
    ids = tok.encode(text, bos=False)
    assert any(tok.sp.id_to_piece(i).startswith("<0x") for i in ids), "test text needs byte-fallback pieces"
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in [*ids, tok.eos_id]] + [decoder.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def test_from_checkpoint_and_for_config(tmp_path):
    assert Tokenizer.for_config(get_preset("tiny")).version == "v1"
    assert Tokenizer.for_config(get_preset("mixtral-8x22b")).version == "v3"
    with pytest.raises(MixtralTrtError, match="32000"):
        Tokenizer.for_config(get_preset("tiny").replace(vocab_size=1000))
    shutil.copy(mistral_common_file("v3"), tmp_path / "tokenizer.model")  # version from its control tokens
    assert Tokenizer.from_checkpoint(tmp_path).version == "v3"
    shutil.copy(mistral_common_file("v1"), tmp_path / "tokenizer.model.v1")  # versioned names come first
    tok = Tokenizer.from_checkpoint(tmp_path)
    assert (tok.version, tok.vocab_size, tok.bos_id, tok.eos_id) == ("v1", 32000, 1, 2)
    (tmp_path / "tokenizer.model.v1").unlink()
    (tmp_path / "tokenizer.model").unlink()
    (tmp_path / "tekken.json").write_text("{}")
    with pytest.raises(MixtralTrtError, match="tekken.json"):
        Tokenizer.from_checkpoint(tmp_path)
    (tmp_path / "tekken.json").unlink()
    with pytest.raises(MixtralTrtError, match="no tokenizer file"):
        Tokenizer.from_checkpoint(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(MixtralTrtError, match="not a SentencePiece model"):
        Tokenizer.from_checkpoint(tmp_path)


@pytest.mark.parametrize("text", ["Hello world", "  two  spaces", "héllo 😀 日本語\n\tnew line ꙮ 𝔘", '{"a": [1, "x"]}'])
def test_token_bytes_spell_what_sentencepiece_decodes(text, version):
    """The bytes of each id (what grammar engines match) concatenate to the text SentencePiece encoded, with
    the leading space of its "▁" prefix; special ids never spell text."""
    tok = Tokenizer(mistral_common_file(version))
    table = tok.token_bytes(special_prefix=b"\xff")
    ids = tok.encode(text, bos=False)
    assert b"".join(table[i] for i in ids) == (" " + text).encode()
    names = {tok.sp.id_to_piece(i) for i in tok.special_ids}
    assert {"<unk>", "<s>", "</s>"} <= names and all(table[i].startswith(b"\xff") for i in tok.special_ids)
    if version == "v3":
        assert {"[INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[REFERENCE_DOC_0]"} <= names
    assert len(tok.special_ids) == (3 if version == "v1" else 771)
