"""Writer details: shard balance, bad inputs, the v3 tokenizer for 32768-token vocabularies, light import."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys

import pytest
import torch

from mixtral_trt.chat import Tokenizer
from mixtral_trt.chat.tokenizer import mistral_common_file
from mixtral_trt.mixtral_ref import MixtralTrtError, get_preset
from mixtral_trt.mixtral_ref.writer import init_checkpoint, init_random, save_checkpoint

CFG = get_preset("tiny").replace(vocab_size=320)


def test_shards_cover_everything_without_empty_files(tmp_path):
    model = init_random(CFG, seed=0)
    n_tensors = 3 + CFG.num_layers * (7 + 3 * CFG.num_experts)
    for shards in (2, 5, n_tensors):
        path = save_checkpoint(model, CFG, tmp_path / f"s{shards}", shards=shards)
        index = json.loads((path / "model.safetensors.index.json").read_text())
        assert len(index["weight_map"]) == n_tensors
        assert sorted(set(index["weight_map"].values())) == sorted(
            p.name for p in path.glob("model-*.safetensors")
        )
        assert len(set(index["weight_map"].values())) == shards
    with pytest.raises(MixtralTrtError, match="shards=0"):
        save_checkpoint(model, CFG, tmp_path / "bad", shards=0)
    assert not (tmp_path / "bad").exists()


def test_state_dict_must_match_config(tmp_path):
    state = init_random(CFG, seed=0).state_dict()
    with pytest.raises(MixtralTrtError, match="layers.1"):
        save_checkpoint(state, CFG.replace(num_layers=1), tmp_path / "x")
    state["embed.weight"] = torch.zeros(3, 3)
    with pytest.raises(MixtralTrtError, match="embed.weight"):
        save_checkpoint(state, CFG, tmp_path / "x")
    with pytest.raises(MixtralTrtError, match="layout"):
        save_checkpoint(init_random(CFG), CFG, tmp_path / "x", layout="gguf")
    assert list(tmp_path.iterdir()) == []


def test_init_random_is_seeded_with_unit_norms():
    a, b, c = (init_random(CFG, seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["embed.weight"], c["embed.weight"])
    assert torch.equal(a["norm.weight"], torch.ones(CFG.hidden_size))
    assert abs(a["layers.0.moe.w13"].std().item() - 0.02) < 0.002


def test_v3_tokenizer_for_32768_vocab(tmp_path):
    cfg = get_preset("tiny").replace(vocab_size=32768)
    path = init_checkpoint(cfg, tmp_path / "ckpt")
    assert filecmp.cmp(path / "tokenizer.model", mistral_common_file("v3"), shallow=False)
    assert Tokenizer.from_checkpoint(path).version == "v3"


def test_import_is_light():
    code = (
        "import sys, mixtral_trt.mixtral_ref as m; m.Tokenizer, m.load_model, m.MixtralConfig, m.Mixtral, "
        "m.get_preset, m.PRESETS; heavy = [n for n in ('transformers', 'onnx', 'onnxruntime', 'tensorrt', "
        "'mistral_common') if n in sys.modules]; print(heavy); assert not heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
