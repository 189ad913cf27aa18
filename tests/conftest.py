"""Shared fixtures: tiny HF transformers Mixtral checkpoints (the oracle), and an in-process CLI runner.

transformers is imported only inside the fixtures that need it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# Small enough for milliseconds per forward; sizes that differ from each other so that a transposed or
# swapped weight cannot have a valid shape.
HF_DEFAULTS = dict(
    vocab_size=131,
    hidden_size=40,
    intermediate_size=56,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=12,
    num_local_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=512,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
)


def _gpu_missing() -> str | None:
    """Why the `gpu` tests cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def pytest_collection_modifyitems(config, items):
    """`gpu` tests (TensorRT engines on a CUDA GPU) skip cleanly, with the reason, where they cannot run."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    reason = _gpu_missing() if gpu_tests else None
    for item in gpu_tests if reason else []:
        item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


def randomize_(model: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Every weight N(0, std) and every norm 1 + N(0, 0.2), so that swapped norms or weights show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.2 * noise if name.endswith("norm.weight") else std * noise)
    return model


def make_hf_model(seed: int = 0, **overrides):
    """A random transformers `MixtralForCausalLM` (fp32, eager attention and experts)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    # eager experts too: transformers 5.23 defaults to torch._grouped_mm, which rejects odd sizes on CPU
    config = MixtralConfig(
        **{**HF_DEFAULTS, **overrides}, attn_implementation="eager", experts_implementation="eager"
    )
    return randomize_(MixtralForCausalLM(config), seed).eval()


@dataclass
class HFCheckpoint:
    path: Path
    model: object  # transformers MixtralForCausalLM


@pytest.fixture
def hf_checkpoint(tmp_path):
    """Factory: hf_checkpoint(seed=0, shard_kb=None, **config) -> HFCheckpoint (from `save_pretrained`)."""

    def make(seed: int = 0, shard_kb: int | None = None, **overrides) -> HFCheckpoint:
        model = make_hf_model(seed, **overrides)
        path = tmp_path / f"hf-{seed}-{len(list(tmp_path.iterdir()))}"
        kwargs = {"max_shard_size": f"{shard_kb}KB"} if shard_kb else {}
        model.save_pretrained(path, **kwargs)
        return HFCheckpoint(path, model)

    return make


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture
def rel_err():
    """rel_err(a, b) = max |a - b| / max |b|."""
    return _rel_err


@pytest.fixture
def hf_model():
    """Factory: hf_model(seed=0, **config) -> random transformers MixtralForCausalLM (not saved)."""
    return make_hf_model


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `mixtral-export ARGS` in this process (through `main`, so user errors exit with code 2)."""

    def run(*args: str) -> CliResult:
        from mixtral_trt.cli import main

        monkeypatch.setattr(sys, "argv", ["mixtral-export", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


# ---- broken checkpoints ------------------------------------------------------------------------------
def _good_checkpoint(path: Path, layout: str = "hub", shards: int = 1) -> Path:
    from mixtral_trt.mixtral_ref import get_preset
    from mixtral_trt.mixtral_ref.writer import init_random, save_checkpoint

    cfg = get_preset("tiny").replace(vocab_size=300, num_experts=4)
    return save_checkpoint(init_random(cfg, seed=0), cfg, path, layout=layout, shards=shards)


def _edit_tensors(file: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _edit_json(file: Path, **changes) -> None:
    import json

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
    import shutil

    shutil.rmtree(p)
    _good_checkpoint(p, shards=3)
    (p / "model-00002-of-00003.safetensors").unlink()
    return ["model-00002-of-00003.safetensors", "missing"]


def _sharded_bad_index(p):
    import json
    import shutil

    shutil.rmtree(p)
    _good_checkpoint(p, shards=2)
    index = json.loads((p / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
    index["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors"
    (p / "model.safetensors.index.json").write_text(json.dumps(index))
    return ["model.safetensors.index.json", "model.embed_tokens.weight", "does not contain it"]


def _consolidated_missing_expert(p):
    import shutil

    shutil.rmtree(p)
    _good_checkpoint(p, layout="consolidated")
    key = "layers.1.feed_forward.experts.3.w1.weight"
    _edit_tensors(p / "consolidated.safetensors", lambda t: t.pop(key))
    return [key, "missing"]


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


@pytest.fixture(scope="session")
def _good_checkpoint_cache(tmp_path_factory):
    return _good_checkpoint(tmp_path_factory.mktemp("good") / "ckpt")


@pytest.fixture(params=list(BROKEN))
def broken_checkpoint(request, tmp_path, _good_checkpoint_cache):
    """Each broken case in turn: (case, path to pass, substrings the one-line error must contain)."""
    import shutil

    case = request.param
    path = tmp_path / case
    shutil.copytree(_good_checkpoint_cache, path)
    expected = BROKEN[case](path)
    return case, (path / "model.safetensors" if case == "not_a_directory" else path), expected


# ---- a tiny checkpoint (real v1 tokenizer) and its fp32 ONNX Runtime engine, shared by runtime and CLI tests
@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_root):
    from support.engines import tiny_checkpoint

    return tiny_checkpoint(tiny_root, seed=3)


@pytest.fixture(scope="session")
def tiny_engine_dir(tiny_ckpt, tiny_root):
    """fp32 ort engine: max_seq 256, max_batch 4, tokenizer.model inside."""
    from support.engines import engine

    return engine(tiny_ckpt, tiny_root)


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_dir):
    from mixtral_trt import runtime

    return runtime.load(tiny_engine_dir)


@pytest.fixture(scope="session")
def tiny_reference(tiny_ckpt):
    from mixtral_trt.mixtral_ref import load_model

    return load_model(tiny_ckpt)


# ---- the same with the v3 tokenizer (tool tokens), fp32 and fp16: function calling and constrained output
@pytest.fixture(scope="session")
def tiny_v3_ckpt(tiny_root):
    from support.engines import tiny_checkpoint

    return tiny_checkpoint(tiny_root, seed=5, tokenizer="v3")


@pytest.fixture(scope="session")
def tiny_v3_engine_dir(tiny_v3_ckpt, tiny_root):
    """fp32 ort engine of the v3 tiny checkpoint: max_seq 1024 (tool definitions are long), max_batch 4."""
    from support.engines import engine

    return engine(tiny_v3_ckpt, tiny_root, max_seq=1024)


@pytest.fixture(scope="session", params=["fp32", "fp16"])
def tiny_v3_engine(request, tiny_v3_ckpt, tiny_root, tiny_v3_engine_dir):
    """The v3 engines, fp32 and fp16 (same limits)."""
    from mixtral_trt import runtime
    from support.engines import engine

    return runtime.load(engine(tiny_v3_ckpt, tiny_root, dtype=request.param, max_seq=1024))
