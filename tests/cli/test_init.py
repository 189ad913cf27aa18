"""`mixtral-export init`: a random checkpoint that HF transformers loads, the real tokenizer beside it,
deterministic for a seed, and nothing left behind when it fails."""

from __future__ import annotations

import filecmp

import pytest
import torch

from mixtral_trt.chat import Tokenizer
from mixtral_trt.chat.tokenizer import mistral_common_file
from mixtral_trt.mixtral_ref import get_preset, load_model

FP32_TOL = 1e-5


def test_init_loads_in_transformers(tmp_path, cli, rel_err):
    from transformers import MixtralForCausalLM

    result = cli("init", "--preset", "tiny", tmp_path / "ckpt", "--seed", "11")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        ".mixtral-trt.json",  # says this tool wrote it: `init --force` may replace it
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.model",
    ]
    hf = MixtralForCausalLM.from_pretrained(
        tmp_path / "ckpt", attn_implementation="eager", experts_implementation="eager", dtype=torch.float32
    ).eval()
    ours = load_model(tmp_path / "ckpt")
    assert hf.config.num_local_experts == ours.config.num_experts == get_preset("tiny").num_experts
    ids = torch.randint(0, 32000, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = rel_err(ours(ids), hf(ids).logits)
    print(f"init checkpoint: relative error vs HF {err:.2e}")
    assert err < FP32_TOL, f"relative error vs HF {err:.2e}"


def test_init_ships_the_real_tokenizer(tmp_path, cli):
    assert cli("init", tmp_path / "ckpt").code == 0
    assert filecmp.cmp(tmp_path / "ckpt/tokenizer.model", mistral_common_file("v1"), shallow=False)
    tok = Tokenizer.from_checkpoint(tmp_path / "ckpt")
    assert (tok.version, tok.vocab_size) == ("v1", get_preset("tiny").vocab_size)


def test_init_is_deterministic_per_seed(tmp_path, cli):
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        assert cli("init", tmp_path / name, "--seed", str(seed)).code == 0
    weights = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in "abc"}
    assert weights["a"] == weights["b"] != weights["c"]


def test_init_refuses_non_empty_out_and_changes_nothing(tmp_path, cli):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("init", out)
    assert result.code == 2 and "--force" in result.err and str(out) in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directory left
    forced = cli("init", out, "--force")  # --force replaces only what this tool wrote (issue 10)
    assert forced.code == 2 and "not a directory mixtral-export wrote" in forced.err, forced.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert cli("init", out).code == 0  # an empty directory is fine
    assert cli("init", out, "--force", "--seed", "1").code == 0  # and ours is replaced
    assert (out / "model.safetensors").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--preset", "mixtral-8x7b"], "too many for a random checkpoint"),
    ],
)
def test_init_bad_arguments_leave_nothing(args, message, tmp_path, cli):
    result = cli("init", tmp_path / "ckpt", *args)
    assert result.code == 2 and message in result.err and result.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_init_failure_midway_leaves_nothing(tmp_path, cli, monkeypatch):
    from mixtral_trt.mixtral_ref import writer

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_write", fail)
    result = cli("init", tmp_path / "ckpt")  # an I/O failure: one line, exit 1 (issue 10)
    assert result.code == 1 and result.err.startswith("error: ") and "disk full" in result.err, result.err
    assert list(tmp_path.iterdir()) == []
