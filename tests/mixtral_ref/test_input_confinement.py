"""Files read from a checkpoint stay inside it, and only this model's tokenizer is carried along
(issue 10, item 3): a `tokenizer.model` linked to /etc/passwd, a weight file or index shard linked or
pointing outside the directory, a tokenizer of another vocabulary: each refused in one line, before any
output is written. The Hugging Face hub cache layout (snapshot files linked into blobs/) still loads.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from mixtral_trt.chat.tokenizer import Tokenizer, copy_tokenizer, mistral_common_file
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.mixtral_ref.checkpoint import inspect_checkpoint


@pytest.fixture
def ckpt(tmp_path, tiny_ckpt):
    return shutil.copytree(tiny_ckpt, tmp_path / "ckpt")


def _swap_for_link(path, target):
    path.unlink()
    os.symlink(target, path)


def test_tokenizer_linked_outside_is_refused_before_anything_is_written(ckpt, tmp_path, cli, monkeypatch):
    from mixtral_trt.exporter import export

    _swap_for_link(ckpt / "tokenizer.model", "/etc/passwd")
    monkeypatch.setattr(export, "trace_graph", lambda *a, **k: pytest.fail("traced despite a bad tokenizer"))
    result = cli("export", ckpt, tmp_path / "onnx")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "tokenizer.model" in result.err and "outside" in result.err and "/etc/passwd" in result.err
    assert not (tmp_path / "onnx").exists()
    with pytest.raises(MixtralTrtError, match="outside"):
        Tokenizer.from_checkpoint(ckpt)
    with pytest.raises(MixtralTrtError, match="outside"):
        copy_tokenizer(ckpt, tmp_path)


def test_a_file_that_is_no_tokenizer_or_another_vocabulary_is_refused(ckpt, tmp_path):
    (ckpt / "tokenizer.model").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")  # a copy, not a link
    with pytest.raises(MixtralTrtError, match="not a SentencePiece model"):
        copy_tokenizer(ckpt, tmp_path)
    shutil.copyfile(mistral_common_file("v3"), ckpt / "tokenizer.model")  # 32768 tokens, config says 32000
    with pytest.raises(MixtralTrtError, match="32768 tokens, but the model's vocabulary has 32000"):
        copy_tokenizer(ckpt, tmp_path, 32000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    from mixtral_trt.chat.tokenizer import tokenizer_file

    os.symlink("tokenizer.model", ckpt / "tokenizer.model.v1")  # a link inside the directory is fine
    shutil.copyfile(mistral_common_file("v1"), ckpt / "tokenizer.model")
    assert tokenizer_file(ckpt, 32000) == ckpt / "tokenizer.model.v1"


def test_weights_linked_outside_are_refused(ckpt, tmp_path, tiny_ckpt):
    _swap_for_link(ckpt / "model.safetensors", tiny_ckpt / "model.safetensors")  # a valid file, elsewhere
    with pytest.raises(MixtralTrtError) as info:
        inspect_checkpoint(ckpt)
    assert "model.safetensors" in str(info.value) and "outside" in str(info.value)


@pytest.mark.parametrize("name", ["../elsewhere.safetensors", "/tmp/x.safetensors", "sub/../../x.safetensors", 7])
def test_index_shards_outside_or_not_names_are_refused(ckpt, name):
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {"model.norm.weight": name}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MixtralTrtError) as info:
        inspect_checkpoint(ckpt)
    message = str(info.value)
    assert "model.safetensors.index.json" in message and "weight_map['model.norm.weight']" in message, message


def test_config_linked_outside_is_refused(ckpt, tmp_path):
    shutil.copyfile(ckpt / "config.json", tmp_path / "other.json")
    _swap_for_link(ckpt / "config.json", tmp_path / "other.json")
    with pytest.raises(MixtralTrtError, match="config.json: leads to .*outside"):
        inspect_checkpoint(ckpt)


def test_the_hub_cache_layout_still_loads(tmp_path, tiny_ckpt):
    """models--org--name/snapshots/<rev>/<file> -> ../../blobs/<sha>, as huggingface_hub stores downloads."""
    repo = tmp_path / "models--mistralai--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for n, f in enumerate(sorted(tiny_ckpt.iterdir())):
        shutil.copyfile(f, repo / "blobs" / f"blob{n}")
        os.symlink(f"../../blobs/blob{n}", snapshot / f.name)
    info = inspect_checkpoint(snapshot)
    assert info.layout == "hub" and Tokenizer.from_checkpoint(snapshot).vocab_size == 32000
