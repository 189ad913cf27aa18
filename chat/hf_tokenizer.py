"""HF tokenizer files (`tokenizer.json`, `tokenizer_config.json`) from a Mixtral SentencePiece model.

Written with the standard library only (no transformers, no tokenizers): export writes them beside the
model, so the engine directory also works with transformers' `AutoTokenizer` and onnxruntime-genai.

The layout is the one of HF's own Llama/Mistral SentencePiece conversions: normalizer Prepend("▁") +
Replace(" ", "▁") (applied to each stretch of text between added tokens, as mistral-common encodes each
piece of text on its own), no pre-tokenizer, a BPE model with byte fallback whose merges are every split
of a normal piece into two normal pieces, ranked by the merged piece's SentencePiece score (SentencePiece
BPE merges the best-scoring pair first). Control pieces and <unk> are special added tokens; v3's
user-defined pieces ([REFERENCE_DOC_i]) are plain added tokens (matched in text, decoded as text).

Known differences from mistral-common (tests/chat/test_hf_tokenizer.py measures them):
- text containing a control token's string ("[INST]", "</s>") encodes to the control id (what the chat
  template relies on); `tokenizers.Tokenizer.encode_special_tokens = True` restores mistral-common's
  behaviour (the string is encoded as text);
- decoding arbitrary ids, not produced by encoding text, can differ on byte-fallback corner cases.

The chat template renders `template.encode_chat`'s rules in Jinja (one template per version).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tokenizer import Tokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
HF_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG)
METASPACE = "\u2581"
# SentencePiece ModelProto piece types (sentencepiece_model.proto)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4


def _pieces(model_file: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) for every id of a SentencePiece model."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return [(p.piece, p.score, p.type) for p in proto.pieces]


def _merges(pieces: list[tuple[str, float, int]]) -> list[list[str]]:
    """Every (left, right) split of a normal piece into two normal pieces, best merged score first."""
    normal = {piece: i for i, (piece, _, kind) in enumerate(pieces) if kind == _NORMAL}
    ranked = []
    for i, (piece, score, kind) in enumerate(pieces):
        if kind != _NORMAL:
            continue
        for cut in range(1, len(piece)):
            left, right = normal.get(piece[:cut]), normal.get(piece[cut:])
            if left is not None and right is not None:
                ranked.append((-score, i, left, right))
    ranked.sort()
    return [[pieces[left][0], pieces[right][0]] for _, _, left, right in ranked]


def tokenizer_json(tokenizer: Tokenizer) -> dict[str, Any]:
    """The `tokenizer.json` document (HF tokenizers format 1.0) of a SentencePiece tokenizer."""
    pieces = _pieces(tokenizer.path)
    bos = pieces[tokenizer.bos_id][0]
    added = [{"id": i, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": kind != _USER_DEFINED}
             for i, (piece, _, kind) in enumerate(pieces) if kind in (_UNKNOWN, _CONTROL, _USER_DEFINED)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": METASPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": METASPACE}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [tokenizer.bos_id], "tokens": [bos]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": METASPACE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": pieces[tokenizer.sp.unk_id()][0],
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": True, "ignore_merges": False,
            "vocab": {piece: i for i, (piece, _, _) in enumerate(pieces)},
            "merges": _merges(pieces),
        },
    }


# ---- the chat template ----------------------------------------------------------------------------
# Gathers the conversation as messages.normalize does: system contents (non-empty) joined with
# "\n\n"; consecutive messages of one role merged with "\n\n" (empty ones skipped); an empty user turn in
# front when the first turn is not the user's. Then `sys_turn` is the user turn that gets the system prompt.
_GATHER = (
    "{%- set ns = namespace(system='', roles=[], turns=[], prev='', sys_turn=-1, text=false) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('chat: role must be system, user or assistant, got ' ~ m['role']) -}}"
    "{%- elif m['role'] == 'system' -%}"
    "{%- if m['content'] -%}{%- set ns.system = ns.system ~ ('\\n\\n' if ns.system else '') ~ m['content'] -%}"
    "{%- endif -%}"
    "{%- elif m['role'] != ns.prev -%}"
    "{%- set ns.roles = ns.roles + [m['role']] -%}{%- set ns.turns = ns.turns + [m['content']] -%}"
    "{%- elif m['content'] -%}"
    "{%- set ns.turns = ns.turns[:-1] + [ns.turns[-1] ~ ('\\n\\n' if ns.turns[-1] else '') ~ m['content']] -%}"
    "{%- endif -%}"
    "{%- set ns.prev = m['role'] -%}"
    "{%- endfor -%}"
    "{%- if not ns.roles or ns.roles[0] != 'user' -%}"
    "{%- set ns.roles = ['user'] + ns.roles -%}{%- set ns.turns = [''] + ns.turns -%}"
    "{%- endif -%}"
    "{%- for r in ns.roles -%}{%- if r == 'user' and (ns.sys_turn < 0 or LAST) -%}"
    "{%- set ns.sys_turn = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{{- bos_token -}}"
)
# v1: "[INST] ... [/INST]" is text; text that follows text is joined with one space (SentencePiece splits
# on whitespace, so encode(a) + encode(b) == encode(a + " " + b)). v2/v3: [INST], [/INST] are control
# tokens around the content; the assistant's trailing spaces are removed.
_TURNS = {
    "v1": ("{{- (' ' if ns.text else '') ~ '[INST] ' ~ c ~ ' [/INST]' -}}{%- set ns.text = true -%}",
           "{{- ' ' ~ c ~ eos_token -}}{%- set ns.text = false -%}"),
    "v3": ("{{- '[INST]' ~ c ~ '[/INST]' -}}", "{{- c.rstrip(' ') ~ eos_token -}}"),
}


def chat_template(version: str) -> str:
    """The Jinja chat template that renders the ids of `Tokenizer.encode_chat` for `version`."""
    user, assistant = _TURNS["v1" if version == "v1" else "v3"]
    return (_GATHER.replace("LAST", "false" if version == "v1" else "true")
            + "{%- for r in ns.roles -%}{%- set c = ns.turns[loop.index0] -%}"
            "{%- if r == 'user' -%}"
            "{%- if ns.system and loop.index0 == ns.sys_turn -%}{%- set c = ns.system ~ '\\n\\n' ~ c -%}{%- endif -%}"
            + user + "{%- else -%}" + assistant + "{%- endif -%}{%- endfor -%}")


def tokenizer_config(tokenizer: Tokenizer, model_max_length: int) -> dict[str, Any]:
    """`tokenizer_config.json`: PreTrainedTokenizerFast (loads tokenizer.json as is, in transformers and in
    onnxruntime-genai), BOS added by encode, the chat template."""
    sp = tokenizer.sp
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": sp.id_to_piece(tokenizer.bos_id),
        "eos_token": sp.id_to_piece(tokenizer.eos_id),
        "unk_token": sp.id_to_piece(sp.unk_id()),
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": chat_template(tokenizer.version),
    }


def write_hf_tokenizer(tokenizer: Tokenizer, out_dir: str | Path, model_max_length: int) -> list[Path]:
    """Write tokenizer.json and tokenizer_config.json into `out_dir` (an export or engine directory)."""
    out_dir = Path(out_dir)
    documents = {TOKENIZER_JSON: tokenizer_json(tokenizer),
                 TOKENIZER_CONFIG: tokenizer_config(tokenizer, model_max_length)}
    paths = []
    for name, doc in documents.items():
        path = out_dir / name
        path.write_text(json.dumps(doc, ensure_ascii=False, indent=None if name == TOKENIZER_JSON else 2) + "\n")
        paths.append(path)
    return paths
