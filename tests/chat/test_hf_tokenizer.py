"""HF tokenizer files converted from the SentencePiece models, against mistral-common (encode, decode) and
against `Tokenizer.encode_chat` (the chat template, rendered by transformers' apply_chat_template)."""

from __future__ import annotations

import json
import random

import pytest

from mixtral_trt.chat.hf_tokenizer import TOKENIZER_CONFIG, TOKENIZER_JSON, write_hf_tokenizer
from mixtral_trt.chat.tokenizer import Tokenizer, mistral_common_file
from support.mistral import mistral_tokenizer

VERSIONS = ("v1", "v3")
CORPUS = [
    "Hello world", "hello", " Hello", "Hello ", "  leading two", "trailing two  ", "   ", " ", "",
    "a  b   c    d", "tab\tseparated\tvalues", "new\nline\n\nparagraph\n", "\n", "\r\n windows",
    "Café, naïve, façade, résumé, Ångström, Øre, straße, œuvre", "Ça va ? À bientôt !", "Mélange d'experts",
    "日本語のテキストです。", "中文分词测试，标点符号！", "한국어 텍스트", "Привет, мир", "مرحبا بالعالم",
    "emoji 😀😃🎉🚀 and 👨‍👩‍👧‍👦 family 🇫🇷 flag", "🤖", "math ∑∫√∞ ≠ ≤",
    "digits 0123456789 and 3.14159 and 1,000,000 and 2024-06-01", "123", " 42", "x=1+2*3",
    "def f(x):\n    return x ** 2  # comment\n", "    indented code", "\t\tdouble tab",
    "▁ already a metaspace ▁▁", "under_score__double", "URL https://example.com/a?b=c&d=e#f",
    "\u00a0non-breaking space", "zero\u200bwidth", "combining e\u0301 vs é", "ﬁ ligature", "ｆｕｌｌｗｉｄｔｈ",
    "\x00\x01 control chars \x7f", "quotes “curly” ‘single’ «guillemets»", "…ellipsis—dash–en",
]
CONTROL_STRINGS = ["<s> literal bos", "</s>", "<unk>", "[INST] looks like control [/INST]", "[TOOL_CALLS] x"]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789  \t\n.,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|éàçüß日本語😀")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module", params=VERSIONS)
def converted(request, tmp_path_factory):
    """(version, mistral-common's raw tokenizer, tokenizers.Tokenizer, directory with the HF files)."""
    from tokenizers import Tokenizer as HFTokenizer

    out = tmp_path_factory.mktemp(f"hf-{request.param}")
    write_hf_tokenizer(Tokenizer(mistral_common_file(request.param)), out, model_max_length=4096)
    raw = mistral_tokenizer(request.param).instruct_tokenizer.tokenizer
    return request.param, raw, HFTokenizer.from_file(str(out / TOKENIZER_JSON)), out


def test_encode_equals_mistral_common(converted):
    version, raw, hf, _ = converted
    texts = CORPUS + _random_texts(500, seed=1)
    bad = [(t, raw.encode(t, bos=True, eos=False), hf.encode(t).ids) for t in texts
           if raw.encode(t, bos=True, eos=False) != hf.encode(t).ids]
    assert not bad, f"{version}: {len(bad)} of {len(texts)} texts encode differently, e.g. {bad[:3]}"


def test_control_token_strings(converted):
    """A control token's string in text is that control token (the chat template needs it); with
    encode_special_tokens it is text, as mistral-common encodes it."""
    version, raw, hf, _ = converted
    special = set(Tokenizer(mistral_common_file(version)).control_tokens.values()) | {0}  # + <unk>
    for text in CONTROL_STRINGS:
        if version == "v1" and "[" in text:
            continue  # v1 has no [INST] / tool control tokens: plain text, covered by the corpus test
        assert special & set(hf.encode(text, add_special_tokens=False).ids), f"{version}: {text!r} -> no control id"
    hf.encode_special_tokens = True
    try:
        for text in CONTROL_STRINGS:
            assert hf.encode(text).ids == raw.encode(text, bos=True, eos=False), f"{version}: {text!r}"
    finally:
        hf.encode_special_tokens = False


def test_decode_equals_mistral_common(converted):
    """Decoding what encoding produced, with control tokens around it (skipped, as mistral-common does)."""
    version, raw, hf, _ = converted
    controls = [raw.bos_id, raw.eos_id] + ([3, 4] if version == "v3" else [])
    rng = random.Random(2)
    for text in CORPUS + _random_texts(300, seed=3):
        ids = raw.encode(text, bos=True, eos=True)
        ids.insert(rng.randint(0, len(ids)), rng.choice(controls))
        assert hf.decode(ids, skip_special_tokens=True) == raw.decode(ids), f"{version}: {text!r} ({ids})"


def _conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    fixed = [
        [("user", "Hi!")],
        [("system", "Be brief."), ("user", "Hi!")],
        [("user", "A"), ("assistant", "B "), ("user", "C")],
        [("system", "S1"), ("user", "A"), ("assistant", "B"), ("system", "S2"), ("user", "C")],
        [("assistant", "x"), ("user", "y")],
        [("system", "only a system prompt")],
        [("user", "")],
        [("user", "a"), ("user", ""), ("user", "b"), ("assistant", " c"), ("assistant", "d")],
        [("user", "Où est la gare ? 日本語, emoji 😀🚀, digits 1234, \n\nnew paragraph  ")],
    ]
    rng = random.Random(seed)
    words = ["Hi!", "Explain MoE.", " leading", "trailing  ", "", "Café 😀", "日本語", "a\n\nb", "  ", "x=1", "ok."]
    out = [list(c) for c in fixed]
    while len(out) < n:
        conv, prev = [], None
        for _ in range(rng.randint(1, 6)):
            role = rng.choice(["system", "user", "assistant"] if prev != "assistant" else ["user", "assistant"])
            content = rng.choice(words) + rng.choice(["", " more words", "\n"])
            conv.append((role, (content or "z") if role == "assistant" else content))
            prev = role
        out.append(conv)
    return [[{"role": r, "content": c} for r, c in conv] for conv in out]


def test_chat_template_renders_encode_chat(converted):
    """transformers' AutoTokenizer on the written files: apply_chat_template gives encode_chat's ids."""
    from transformers import AutoTokenizer

    from mixtral_trt.common.errors import MixtralTrtError

    version, _, _, directory = converted
    ours = Tokenizer(mistral_common_file(version))
    hf = AutoTokenizer.from_pretrained(directory)
    assert hf("Hello world")["input_ids"] == ours.encode("Hello world")
    checked = 0
    for messages in _conversations(150, seed=4):
        try:
            expected = ours.encode_chat(messages)
        except MixtralTrtError:  # conversations mistral-common rejects (e.g. ending with an assistant turn)
            continue
        got = list(hf.apply_chat_template(messages, tokenize=True, return_dict=False))
        assert got == expected, f"{version}: {messages}\n{hf.apply_chat_template(messages, tokenize=False)!r}"
        checked += 1
    assert checked >= 100, checked
    # a continued final assistant message (no EOS); transformers strips the final message's trailing spaces
    messages = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven is"}]
    got = list(hf.apply_chat_template(messages, tokenize=True, continue_final_message=True, return_dict=False))
    assert got == ours.encode_chat(messages, continue_final=True)


def test_tokenizer_config(converted):
    version, _, _, directory = converted
    config = json.loads((directory / TOKENIZER_CONFIG).read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == ("<s>", "</s>", True)
    assert config["model_max_length"] == 4096 and "[INST]" in config["chat_template"]
