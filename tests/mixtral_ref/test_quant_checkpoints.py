"""Quantized checkpoints (GPTQ, AWQ, compressed-tensors): the weights we load equal each producer's own
dequantization exactly, and every bad field / tensor is one CheckpointError naming it.

Oracles: compressed-tensors' compressors wrote the pack-quantized / float-quantized checkpoints and their
`decompress` is compared; GPTQ and AWQ are unpacked by onnxruntime-genai's loaders (its GPTQ v1 zero-point
handling and AWQ nibble order), and the dequantization (q - z[g_idx]) * s[g_idx] is taken from those integers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mixtral_trt.common.errors import CheckpointError
from mixtral_trt.mixtral_ref.checkpoint import inspect_checkpoint, load_state_dict
from mixtral_trt.mixtral_ref.keymaps import plan
from support.quant_checkpoints import QUANT_CFG, linear_names, write_awq, write_compressed, write_gptq

pytest.importorskip("onnxruntime_genai")


def _loaded_linears(path: Path) -> dict[str, torch.Tensor]:
    """Stored float-weight name -> what load_state_dict made of it (through the reference's names)."""
    state = load_state_dict(path, dtype=torch.float32)
    out = {}
    for entry in plan("hub", QUANT_CFG):
        parts = entry.split(state[entry.name])
        out.update({p.key: t for p, t in zip(entry.parts, parts, strict=True)})
    return out


def _genai_dequantized(path: Path, method: str, bits: int, group_size: int, v1: bool) -> dict[str, torch.Tensor]:
    """onnxruntime-genai's unpacking of each GPTQ / AWQ linear, dequantized in float32 from its integers."""
    from onnxruntime_genai.models.loaders.awq import AWQModel
    from onnxruntime_genai.models.loaders.base import QuantizedTensorModule
    from onnxruntime_genai.models.loaders.gptq import GPTQModel

    stored = load_file(path / "model.safetensors")
    loader = object.__new__(GPTQModel if method == "gptq" else AWQModel)
    out = {}
    for base in linear_names(QUANT_CFG):
        m = QuantizedTensorModule()
        m.qweight, m.qzeros, m.scales = (stored[f"{base}.{s}"] for s in ("qweight", "qzeros", "scales"))
        m.g_idx, m.bits = stored.get(f"{base}.g_idx"), bits
        if method == "gptq":
            m.out_features, m.in_features = m.qweight.shape[1], m.g_idx.shape[0]
        else:
            m.out_features, m.in_features = m.scales.shape[1], m.qweight.shape[0]
        m.group_size = group_size if group_size > 0 else m.in_features
        if method == "gptq" and v1:
            loader.handle_qzeros(m)  # v1 zero points: stored + 1
        loader.unpack_qzeros(m)
        loader.unpack_qweight(m)
        g_idx = m.g_idx.long() if m.g_idx is not None else torch.arange(m.in_features) // m.group_size
        q = m.qweight.float() - m.qzeros.float()[g_idx]  # [K, N]
        out[f"{base}.weight"] = (q * m.scales.float()[g_idx]).T
    return out


GPTQ_CASES = [  # bits, group_size, desc_act, sym, checkpoint_format
    (4, 32, False, True, "gptq"), (4, 128, True, False, "gptq"), (4, -1, False, False, "gptq_v2"),
    (8, 64, True, True, "gptq_v2"), (8, 32, False, False, "gptq"), (4, 64, True, True, "gptq_v2"),
]


@pytest.mark.parametrize(("bits", "group", "desc_act", "sym", "fmt"), GPTQ_CASES)
def test_gptq_equals_its_dequantization(tmp_path, bits, group, desc_act, sym, fmt):
    write_gptq(tmp_path / "c", bits, group, desc_act, sym, fmt)
    info = inspect_checkpoint(tmp_path / "c")
    q = info.quantized.quant
    assert (q.method, q.bits, q.group_size, q.act_order, q.symmetric) == ("gptq", bits, max(group, 0), desc_act, sym)
    ours, oracle = _loaded_linears(tmp_path / "c"), _genai_dequantized(tmp_path / "c", "gptq", bits, group,
                                                                      fmt == "gptq")
    for key, want in oracle.items():
        assert torch.equal(ours[key], want), f"{key}: max diff {(ours[key] - want).abs().max():.3g}"


def test_awq_equals_its_dequantization(tmp_path):
    write_awq(tmp_path / "c", group_size=64)
    assert inspect_checkpoint(tmp_path / "c").quantized.quant.name == "awq (gemm) int4 group 64, asymmetric"
    ours, oracle = _loaded_linears(tmp_path / "c"), _genai_dequantized(tmp_path / "c", "awq", 4, 64, False)
    for key, want in oracle.items():
        assert torch.equal(ours[key], want), f"{key}: max diff {(ours[key] - want).abs().max():.3g}"


CT_CASES = [  # format, bits, strategy, group_size, symmetric
    ("pack-quantized", 4, "group", 32, True), ("pack-quantized", 4, "group", 128, False),
    ("pack-quantized", 8, "channel", None, True), ("pack-quantized", 8, "group", 64, False),
    ("pack-quantized", 4, "channel", None, False),
    ("float-quantized", 8, "tensor", None, True), ("float-quantized", 8, "channel", None, True),
]


@pytest.mark.parametrize(("fmt", "bits", "strategy", "group", "sym"), CT_CASES)
def test_compressed_tensors_equal_their_decompression(tmp_path, fmt, bits, strategy, group, sym):
    oracle = write_compressed(tmp_path / "c", fmt, bits, strategy, group, sym)
    ours = _loaded_linears(tmp_path / "c")
    assert set(oracle) <= set(ours)
    for key, want in oracle.items():
        assert torch.equal(ours[key], want), f"{key}: max diff {(ours[key] - want).abs().max():.3g}"
    info = inspect_checkpoint(tmp_path / "c")
    assert info.quantized.kinds() == {"attention": 8, "experts": 24}  # router and LM head ignored: float


@pytest.mark.parametrize("sym", [True, False])
def test_compressed_tensors_actorder_group_equals_its_decompression(tmp_path, sym):
    """actorder "group" (a weight_g_idx per linear, groups of scattered input channels) loads to
    compressed-tensors' own decompression (support.quant_checkpoints.write_compressed says how, since 0.20 no
    longer writes it); the g_idx matters: read as contiguous groups, the weights would differ."""
    oracle = write_compressed(tmp_path / "c", "pack-quantized", 4, "group", 32, sym, actorder=True)
    ours = _loaded_linears(tmp_path / "c")
    for key, want in oracle.items():
        assert torch.equal(ours[key], want), f"{key}: max diff {(ours[key] - want).abs().max():.3g}"
    stored = load_file(tmp_path / "c" / "model.safetensors")
    g_idx = stored["model.layers.0.self_attn.q_proj.weight_g_idx"]
    assert not torch.equal(g_idx, torch.arange(g_idx.numel(), dtype=g_idx.dtype) // 32)
    assert inspect_checkpoint(tmp_path / "c").quantized.quant.act_order


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    q = config["quantization_config"]
    for key, value in changes.items():
        target = q
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        if value is None:
            target.pop(leaf)
        else:
            target[leaf] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def gptq_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gptq") / "c"
    write_gptq(path, 4, 32, False, False, "gptq_v2")
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"bits": 3}, "quantization_config.bits: 3 is not supported"),
    ({"group_size": 48}, "quantization_config.group_size: 48 is not supported"),
    ({"checkpoint_format": "marlin"}, "checkpoint_format: 'marlin' is not supported"),
    ({"desc_act": None}, "quantization_config: field 'desc_act' is missing"),
    ({"sym": "yes"}, "quantization_config.sym: expected bool"),
    ({"quant_method": "exl2"}, "quant_method: 'exl2' is not supported"),
    ({"dynamic": {"-:.*": {}}}, "quantization_config.dynamic: per-module overrides"),
    ({"sym": True}, "zero points differ from 8 but the config says symmetric"),
    ({"group_size": 64}, "model.safetensors: tensor model.layers.0.self_attn.q_proj.qzeros has shape [4, 16]"),
])
def test_gptq_bad_fields(tmp_path, gptq_dir, change, message):
    path = tmp_path / "c"
    shutil.copytree(gptq_dir, path)
    _edit_config(path, **change)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(path)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_gptq_missing_g_idx_and_v1_zero_overflow(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "c"
    write_gptq(path, 4, 32, False, False, "gptq_v2")
    stored = load_file(path / "model.safetensors")
    del stored["model.layers.1.self_attn.k_proj.g_idx"]
    save_file(stored, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"tensor model\.layers\.1\.self_attn\.k_proj\.g_idx is missing"):
        inspect_checkpoint(path)
    stored["model.layers.1.self_attn.k_proj.g_idx"] = torch.arange(QUANT_CFG.hidden_size, dtype=torch.int32) // 32
    stored["model.layers.0.self_attn.q_proj.qzeros"][0, 0] = -1  # v1: stored 15 means zero 16
    save_file(stored, path / "model.safetensors")
    _edit_config(path, checkpoint_format="gptq")
    with pytest.raises(CheckpointError, match=r"q_proj\.qzeros: zero point 16 overflows 4 bits"):
        load_state_dict(path)


def test_gptq_shuffled_groups_need_desc_act(tmp_path):
    path = tmp_path / "c"
    write_gptq(path, 4, 32, True, True, "gptq_v2")
    _edit_config(path, desc_act=False)
    with pytest.raises(CheckpointError, match=r"g_idx: groups are not contiguous but the config says no act-order"):
        load_state_dict(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"version": "gemv"}, "quantization_config.version: 'gemv' is not supported"),
    ({"zero_point": False}, "quantization_config.zero_point: false is not supported"),
    ({"bits": 8}, "quantization_config.bits: 8 is not supported"),
])
def test_awq_bad_fields(tmp_path, change, message):
    path = tmp_path / "c"
    write_awq(path)
    _edit_config(path, **change)
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        inspect_checkpoint(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"ignore": ["lm_head"]}, "model.layers.0.block_sparse_moe.gate is stored in float but"),
    ({"ignore": ["lm_head", "re:.*block_sparse_moe.gate$", "re:.*q_proj$"]}, "q_proj is stored quantized but"),
    ({"config_groups__group_0__weights__num_bits": 3}, "weights.num_bits: 3 is not supported"),
    ({"format": "marlin-24"}, "quantization_config.format: 'marlin-24' is not supported"),
    ({"kv_cache_scheme": {"num_bits": 8}}, "kv_cache_scheme: quantized KV caches are not supported"),
    ({"config_groups__group_0__weights__strategy": "block"}, "weights.strategy: 'block' is not supported"),
])
def test_compressed_tensors_bad_fields(tmp_path, change, message):
    path = tmp_path / "c"
    write_compressed(path, "pack-quantized", 4, "group", 32, True)
    _edit_config(path, **change)
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    assert message in str(e.value)


def test_compressed_tensors_weight_shape_checked(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "c"
    write_compressed(path, "pack-quantized", 8, "channel", None, False)
    stored = load_file(path / "model.safetensors")
    stored["model.layers.0.self_attn.v_proj.weight_shape"] = torch.tensor([64, 120])
    save_file(stored, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"v_proj\.weight_shape is \[64, 120\], expected \[64, 128\]"):
        load_state_dict(path)


def test_symmetric_gptq_codes_keep_their_range(tmp_path):
    """Symmetric GPTQ uses the full 0..15 range around zero 8 (the -8 end included): nothing clipped."""
    path = tmp_path / "c"
    write_gptq(path, 4, 32, False, True, "gptq")
    w = _loaded_linears(path)["model.layers.0.block_sparse_moe.experts.0.w1.weight"]
    stored = load_file(path / "model.safetensors")
    s = stored["model.layers.0.block_sparse_moe.experts.0.w1.scales"].float().T  # [N, G]
    q = w / s.repeat_interleave(32, 1)
    assert np.array_equal(q.numpy(), np.round(q.numpy())) and q.min() >= -8 and q.max() <= 7
