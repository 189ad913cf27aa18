"""Shared fixtures: tiny HF transformers Mixtral checkpoints (the oracle), and an in-process CLI runner.

transformers is imported only inside the fixtures that need it.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from support.broken_checkpoints import BROKEN, good_checkpoint

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


@pytest.fixture(scope="session")
def _good_checkpoint_cache(tmp_path_factory):
    return good_checkpoint(tmp_path_factory.mktemp("good") / "ckpt")


@pytest.fixture(params=list(BROKEN))
def broken_checkpoint(request, tmp_path, _good_checkpoint_cache):
    """Each broken case in turn (support/broken_checkpoints.py): (case, path to pass, substrings the one-line
    error must contain)."""
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
def tiny_ragged_engine(tiny_ckpt, tiny_root):
    """The same export as tiny_engine built --ragged (the Scheduler runs mixed steps on it)."""
    from mixtral_trt import runtime
    from support.engines import engine

    return runtime.load(engine(tiny_ckpt, tiny_root, ragged=True))


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
