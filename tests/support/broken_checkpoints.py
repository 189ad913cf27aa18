"""Broken checkpoints: each case breaks a copy of a good tiny checkpoint in one way (truncated or corrupt
safetensors, missing / misshapen / mistyped / unknown tensors, configs that disagree with the weights or are
invalid, pickle-only weights, sharded indexes that lie) and names what the one-line error must say.
The `broken_checkpoint` fixture (tests/conftest.py) runs each in turn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.mixtral_ref.writer import init_random, save_checkpoint


def good_checkpoint(path: Path, layout: str = "hub", shards: int = 1) -> Path:
    """The tiny preset with a 300-token vocabulary and 4 experts, written in `layout`."""
    cfg = get_preset("tiny").replace(vocab_size=300, num_experts=4)
    return save_checkpoint(init_random(cfg, seed=0), cfg, path, layout=layout, shards=shards)


def _edit_tensors(file: Path, edit) -> None:
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _edit_json(file: Path, **changes) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def _truncated(p):
    f = p / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return ["model.safetensors", "not a readable safetensors file"]


def _corrupt_header(p):
    f = p / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:24] = b"{garbage garbage"
    f.write_bytes(bytes(data))
    return ["model.safetensors", "not a readable safetensors file"]


def _missing_tensor(p):
    key = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
    _edit_tensors(p / "model.safetensors", lambda t: t.pop(key))
    return [key, "missing"]


def _wrong_shape(p):
    key = "model.layers.0.self_attn.k_proj.weight"
    _edit_tensors(p / "model.safetensors", lambda t: t.update({key: t[key][:16].contiguous()}))
    return ["model.safetensors", key, "shape [16, 64]", "[32, 64]"]


def _wrong_dtype(p):
    key = "model.layers.0.input_layernorm.weight"
    _edit_tensors(p / "model.safetensors", lambda t: t.update({key: t[key].to(torch.int32)}))
    return [key, "dtype I32"]


def _unknown_tensor(p):
    key = "model.layers.0.self_attn.rotary_emb.inv_freq"
    _edit_tensors(p / "model.safetensors", lambda t: t.update({key: torch.zeros(8)}))
    return [key, "unexpected tensor"]


def _config_more_layers(p):
    _edit_json(p / "config.json", num_hidden_layers=3)
    return ["model.layers.2.", "missing", "3 layers"]


def _config_other_size(p):
    _edit_json(p / "config.json", intermediate_size=80)
    return ["config.json", "model.layers.0.block_sparse_moe.experts.0.w1.weight", "[96, 64]", "[80, 64]"]


def _config_invalid_json(p):
    (p / "config.json").write_text('{"vocab_size": 300,')
    return ["config.json", "not valid JSON"]


def _config_bad_value(p):
    _edit_json(p / "config.json", num_key_value_heads=3)
    return ["config.json", "num_heads=4", "num_kv_heads=3"]


def _no_config(p):
    (p / "config.json").unlink()
    return ["no config.json or params.json"]


def _pickle_only(p):
    (p / "model.safetensors").rename(p / "pytorch_model.bin")
    return ["pytorch_model.bin", "pickle", "arbitrary code", "safetensors"]


def _pth_only(p):
    (p / "model.safetensors").unlink()
    (p / "consolidated.00.pth").write_bytes(b"\x80\x04K\x01.")
    return ["consolidated.00.pth", "pickle", "arbitrary code"]


def _empty_dir(p):
    for f in p.iterdir():
        f.unlink()
    return [str(p), "no weights found"]


def _not_a_directory(p):
    return [str(p / "model.safetensors"), "not a directory"]


def _sharded_missing_file(p):
    shutil.rmtree(p)
    good_checkpoint(p, shards=3)
    (p / "model-00002-of-00003.safetensors").unlink()
    return ["model-00002-of-00003.safetensors", "missing"]


def _sharded_bad_index(p):
    shutil.rmtree(p)
    good_checkpoint(p, shards=2)
    index = json.loads((p / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
    index["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors"
    (p / "model.safetensors.index.json").write_text(json.dumps(index))
    return ["model.safetensors.index.json", "model.embed_tokens.weight", "does not contain it"]


def _consolidated_missing_expert(p):
    shutil.rmtree(p)
    good_checkpoint(p, layout="consolidated")
    key = "layers.1.feed_forward.experts.3.w1.weight"
    _edit_tensors(p / "consolidated.safetensors", lambda t: t.pop(key))
    return [key, "missing"]


# case -> break a copy of good_checkpoint in place; returns what the one-line error must contain
BROKEN = {
    f.__name__.lstrip("_"): f
    for f in (
        _truncated,
        _corrupt_header,
        _missing_tensor,
        _wrong_shape,
        _wrong_dtype,
        _unknown_tensor,
        _config_more_layers,
        _config_other_size,
        _config_invalid_json,
        _config_bad_value,
        _no_config,
        _pickle_only,
        _pth_only,
        _empty_dir,
        _not_a_directory,
        _sharded_missing_file,
        _sharded_bad_index,
        _consolidated_missing_expert,
    )
}
