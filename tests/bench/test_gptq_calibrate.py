"""bench.gptq_calibrate's fix-up of llm-compressor 0.14's output (its producer does not install under the lock,
so only the fix-up is tested): a compressed-tensors checkpoint written by compressed-tensors' own compressors,
its expert linears renamed as llm-compressor 0.14 saves them under transformers 5.25 (gate_proj / up_proj /
down_proj), is refused by our reader, and after rename_experts loads to compressed-tensors' own decompression."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mixtral_trt.bench.gptq_calibrate import calibration_windows, rename_experts
from mixtral_trt.common.errors import CheckpointError
from mixtral_trt.mixtral_ref.checkpoint import load_state_dict
from mixtral_trt.mixtral_ref.keymaps import plan
from support.quant_checkpoints import QUANT_CFG, write_compressed

LLMCOMPRESSOR_NAMES = {".w1.": ".gate_proj.", ".w3.": ".up_proj.", ".w2.": ".down_proj."}


def _as_llmcompressor_saves(path: Path) -> int:
    f = path / "model.safetensors"
    tensors, out = load_file(f), {}
    for name, t in tensors.items():
        for hub, theirs in LLMCOMPRESSOR_NAMES.items():
            if ".experts." in name:
                name = name.replace(hub, theirs)
        out[name] = t
    save_file(out, f)
    return sum(".experts." in n for n in out)


def test_rename_experts_makes_llmcompressor_output_loadable(tmp_path):
    ckpt = tmp_path / "c"
    oracle = write_compressed(ckpt, "pack-quantized", 4, "group", 32, True)
    expert_tensors = _as_llmcompressor_saves(ckpt)
    with pytest.raises(CheckpointError, match="w1"):
        load_state_dict(ckpt, dtype=torch.float32)
    assert rename_experts(ckpt) == expert_tensors > 0
    state = load_state_dict(ckpt, dtype=torch.float32)
    loaded = {}
    for entry in plan("hub", QUANT_CFG):
        parts = entry.split(state[entry.name])
        loaded.update({p.key: t for p, t in zip(entry.parts, parts, strict=True)})
    assert set(oracle) <= set(loaded)
    for key, want in oracle.items():
        assert torch.equal(loaded[key], want), f"{key}: max diff {(loaded[key] - want).abs().max():.3g}"


def test_calibration_windows_skip_the_scored_tokens():
    ids = list(range(100, 200))
    windows = calibration_windows(ids, skip=40, samples=3, seq=8, bos=1)
    assert windows == [[1, *range(140 + 7 * i, 147 + 7 * i)] for i in range(3)]
    with pytest.raises(SystemExit, match="too few"):
        calibration_windows(ids, skip=90, samples=3, seq=8, bos=1)
