"""Output-path safety and input confinement (common/paths.py; issue 10, items 1 and 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.paths import check_output_dir, confined


@pytest.fixture
def tree(tmp_path, monkeypatch):
    (tmp_path / "work" / "ckpt").mkdir(parents=True)
    (tmp_path / "work" / "ckpt" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "work"


@pytest.mark.parametrize(("out", "message"), [
    ("ckpt", "is the input ckpt"),
    (".", "current directory"),
    ("..", "current directory"),
    ("ckpt/onnx", "lies inside the input ckpt"),
    ("ckpt/sub/onnx", "lies inside the input ckpt"),
])
def test_output_that_would_destroy_an_input_is_refused(tree, out, message):
    with pytest.raises(MixtralTrtError, match=message):
        check_output_dir(out, ["ckpt"])


def test_output_containing_an_input_is_refused(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    with pytest.raises(MixtralTrtError, match="contains the input"):
        check_output_dir("work", ["work/ckpt"])
    with pytest.raises(MixtralTrtError, match="contains the input"):  # a file input counts too
        check_output_dir("work", ["work/ckpt/config.json"])


def test_links_are_resolved(tree):
    os.symlink(tree / "ckpt", tree / "alias")
    with pytest.raises(MixtralTrtError, match="is the input"):
        check_output_dir("alias", ["ckpt"])


def test_root_and_home_are_refused(tree, monkeypatch):
    monkeypatch.setenv("HOME", str(tree / "home"))
    (tree / "home").mkdir()
    for out in ("/", tree / "home", tree):  # tree is a parent of home (and of cwd)
        with pytest.raises(MixtralTrtError, match="root or home|current directory"):
            check_output_dir(out)


def test_a_sibling_output_is_fine(tree):
    assert check_output_dir("onnx", ["ckpt"]) == Path("onnx")
    assert check_output_dir("ckpt-onnx", ["ckpt"]) == Path("ckpt-onnx")  # a prefix is not a parent


def test_confined_refuses_links_leaving_the_directory(tree):
    ckpt = tree / "ckpt"
    (tree / "secret").write_text("x")
    os.symlink(tree / "secret", ckpt / "tokenizer.model")
    os.symlink("config.json", ckpt / "inside")
    assert confined(ckpt, ckpt / "inside") == ckpt / "inside"
    with pytest.raises(MixtralTrtError, match="outside"):
        confined(ckpt, ckpt / "tokenizer.model")
    with pytest.raises(MixtralTrtError, match="outside"):
        confined(ckpt, ckpt / ".." / "secret")


def test_confined_allows_the_hub_cache_layout(tmp_path):
    repo = tmp_path / "models--mistralai--Mixtral-8x7B-v0.1"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "blobs" / "f00d").write_text("weights")
    os.symlink("../../blobs/f00d", snapshot / "model.safetensors")
    assert confined(snapshot, snapshot / "model.safetensors") == snapshot / "model.safetensors"
    (tmp_path / "elsewhere").write_text("x")
    os.symlink(tmp_path / "elsewhere", snapshot / "tokenizer.model")
    with pytest.raises(MixtralTrtError, match="outside"):
        confined(snapshot, snapshot / "tokenizer.model")
