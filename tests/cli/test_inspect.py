"""`mixtral-export inspect`: a summary of good checkpoints (every layout), a chat reply, and one clear
line (exit code 2, no traceback) for each broken checkpoint of tests/support/broken_checkpoints.py: BROKEN."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_broken_checkpoint_is_one_line_exit_2(broken_checkpoint, cli):
    case, path, expected = broken_checkpoint
    result = cli("inspect", path)
    assert result.code == 2, f"{case}: exit code {result.code}\n{result.out}{result.err}"
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.out + result.err
    for part in expected:
        assert part in result.err, f"{case}: {part!r} not in {result.err!r}"


def test_console_script_prints_no_traceback(tmp_path):
    """The installed `mixtral-export` entry point, in a real process, on a truncated file."""
    import json
    from pathlib import Path

    from mixtral_trt.mixtral_ref import get_preset

    (tmp_path / "config.json").write_text(json.dumps(get_preset("tiny").to_hf_dict()))
    (tmp_path / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{}")
    script = Path(sys.executable).parent / "mixtral-export"
    assert script.is_file(), f"console script not installed beside {sys.executable}"
    proc = subprocess.run(
        [str(script), "inspect", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "model.safetensors" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("layout", ["hub", "fused", "consolidated"])
def test_inspect_summarises_every_layout(layout, tmp_path, cli):
    from mixtral_trt.mixtral_ref import get_preset
    from mixtral_trt.mixtral_ref.writer import init_random, save_checkpoint

    cfg = get_preset("tiny").replace(num_experts=6, top_k=3)
    save_checkpoint(init_random(cfg, seed=1), cfg, tmp_path / "ckpt", layout=layout, shards=2)
    result = cli("inspect", tmp_path / "ckpt")
    assert result.code == 0, result.err
    total = f"{cfg.num_parameters() / 1e6:,.1f}M total"
    for text in (layout, "6 / 3", "32000 / 64 / 96", "F32", total):
        assert text in result.out, f"{text!r} not in\n{result.out}"
    assert "none" in result.out  # no tokenizer file beside these weights: reported, not an error


def test_inspect_chat_replies(tmp_path, cli):
    from mixtral_trt.chat import Tokenizer
    from mixtral_trt.mixtral_ref import load_model
    from mixtral_trt.mixtral_ref.generate import generate

    assert cli("init", tmp_path / "ckpt", "--seed", "3").code == 0
    result = cli("inspect", tmp_path / "ckpt", "--chat", "Où est la bibliothèque ?", "--max-new-tokens", "12")
    assert result.code == 0, result.err
    assert "tokenizer.model (v1, 32000 tokens)" in result.out
    tokenizer = Tokenizer.from_checkpoint(tmp_path / "ckpt")
    ids = generate(
        load_model(tmp_path / "ckpt"),
        tokenizer.encode_chat([{"role": "user", "content": "Où est la bibliothèque ?"}]),
        12,
        tokenizer.eos_id,
    )
    reply = tokenizer.decode([i for i in ids if i != tokenizer.eos_id])
    assert f"assistant: {reply}\n" in result.out, result.out


def test_inspect_chat_without_tokenizer_is_an_error(tmp_path, cli):
    assert cli("init", tmp_path / "ckpt").code == 0
    (tmp_path / "ckpt/tokenizer.model").unlink()
    result = cli("inspect", tmp_path / "ckpt", "--chat", "hi")
    assert result.code == 2 and "no tokenizer file" in result.err and result.err.count("\n") == 1


def test_inspect_chat_with_mismatched_tokenizer_is_an_error(tmp_path, cli):
    import shutil

    from mixtral_trt.chat.tokenizer import mistral_common_file

    assert cli("init", tmp_path / "ckpt").code == 0
    shutil.copy(mistral_common_file("v3"), tmp_path / "ckpt/tokenizer.model")
    assert "does not match vocab_size 32000" in cli("inspect", tmp_path / "ckpt").out
    result = cli("inspect", tmp_path / "ckpt", "--chat", "hi")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "tokenizer.model: 32768 tokens" in result.err and "32000" in result.err


def test_quantized_checkpoint_summary_and_bad_field(cli, tmp_path):
    """A GPTQ checkpoint: format, bits, groups, act-order, what is quantized and the export's bytes per dtype; a
    3-bit config is one line, exit 2."""
    import json

    from support.quant_checkpoints import write_gptq

    pytest.importorskip("onnxruntime_genai")
    path = tmp_path / "gptq"
    write_gptq(path, 4, 128, True, False, "gptq_v2")
    result = cli("inspect", path)
    assert result.code == 0, result.err
    for part in ("gptq (gptq_v2), int4, asymmetric (zero points)", "128 inputs / yes (g_idx)",
                 "8 attention, 24 experts (the rest float)", "MiB (stored, act-order inputs reordered)"):
        assert part in result.out, f"{part!r} not in\n{result.out}"
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["bits"] = 3
    (path / "config.json").write_text(json.dumps(config))
    result = cli("inspect", path)
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "quantization_config.bits: 3 is not supported (supported: 4, 8)" in result.err


def test_fp8_checkpoint_summary(cli, tmp_path):
    """A compressed-tensors FP8 checkpoint (bf16 scales): fp32 / bf16 exports keep the experts' e4m3 bytes
    (MoEExpertsF8), fp16 cannot hold the scales and goes out as float, which `inspect` counts per dtype."""
    from support.quant_checkpoints import write_compressed

    path = tmp_path / "fp8"
    write_compressed(path, "float-quantized", 8, "channel")
    result = cli("inspect", path)
    assert result.code == 0, result.err
    out = " ".join(result.out.replace("│", " ").split())
    for part in ("compressed-tensors (float-quantized), FP8 e4m3", "fp32 1.4 MiB (stored, FP8 experts)",
                 "fp16 1.8 MiB (float)", "bf16 1.1 MiB (stored, FP8 experts)"):
        assert part in out, f"{part!r} not in\n{result.out}"
