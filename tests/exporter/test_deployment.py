"""What export and build write for deployment: graphs without debug outputs unless asked, the HF tokenizer
files and generation_config.json carried along, genai_config.json (hashed in the manifest), and parity on
an engine without debug outputs (per-layer report n/a, with the way to get it)."""

from __future__ import annotations

import json

import onnx
import pytest

from mixtral_trt import runtime
from mixtral_trt.common.contract import MODEL_FILE, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.exporter.genai_config import genai_config
from mixtral_trt.parity import check_engine
from mixtral_trt.plugins import cpu_kernels
from support.engines import tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("deploy"))
    (ckpt / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": [2, 7], "do_sample": True, "temperature": 0.7, "top_p": 0.9}))
    return ckpt


@pytest.fixture(scope="module")
def production(checkpoint, tmp_path_factory):
    return export_checkpoint(checkpoint, tmp_path_factory.mktemp("prod") / "onnx", max_seq=128, max_batch=2)


def _outputs(directory):
    return [o.name for o in onnx.load(str(directory / MODEL_FILE), load_external_data=False).graph.output]


def test_graph_outputs_logits_and_cache_only_unless_asked(checkpoint, production, tmp_path):
    layers = GraphContract.load(production).config.num_layers
    cache = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    assert _outputs(production) == ["logits", *cache]
    assert not GraphContract.load(production).debug_outputs
    debug = export_checkpoint(checkpoint, tmp_path / "debug", max_seq=128, max_batch=2, debug_outputs=True)
    assert _outputs(debug) == ["logits", *cache, *[f"hidden.{i}" for i in range(layers)],
                               *[f"router_logits.{i}" for i in range(layers)]]
    assert _outputs(build_engine(production, tmp_path / "engine", "ort")) == ["logits", *cache]


def test_side_files_and_genai_config(production, tmp_path):
    names = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    assert names <= {p.name for p in production.iterdir()}
    engine_dir = build_engine(production, tmp_path / "engine", "ort", genai_provider="cuda")
    manifest = Manifest.load(engine_dir)
    assert names | {"genai_config.json"} <= set(manifest.artifacts)  # hashed: runtime.load verifies them
    config = json.loads((engine_dir / "genai_config.json").read_text())
    model, search = config["model"], config["search"]
    assert (model["type"], model["eos_token_id"], model["pad_token_id"], model["context_length"]) == \
        ("mistral", [2, 7], 2, 128)
    assert model["decoder"]["session_options"]["provider_options"] == [{"cuda": {}}]
    assert model["decoder"]["inputs"]["position_ids"] == "position_ids"
    assert (search["do_sample"], search["temperature"], search["top_p"], search["top_k"]) == (True, 0.7, 0.9, 50)
    assert search["past_present_share_buffer"] is False and search["max_length"] == 128
    with pytest.raises(MixtralTrtError, match="--genai-provider 'rocm'"):
        build_engine(production, tmp_path / "other", "ort", genai_provider="rocm")
    assert genai_config(manifest.contract, MODEL_FILE)["search"]["do_sample"] is False  # HF defaults
    assert manifest.backend_info["experts"] == "moe"  # built for CUDA: the fused MoE op (lowering/ort.py)


def test_expert_form_choice_and_refusals(production, tmp_path, cli):
    """fp32 for the CPU: our CPU kernels by default where the library is built, else per-expert MatMuls; a wrong
    --experts is one line, exit 2, nothing written."""
    default = "cpu_kernels" if cpu_kernels.library_path() else "matmul"
    assert Manifest.load(build_engine(production, tmp_path / "cpu", "ort")).backend_info["experts"] == default
    ort = build_engine(production, tmp_path / "cpu-ort", "ort", cpu_kernels="ort")
    assert Manifest.load(ort).backend_info["experts"] == "matmul"
    for args, message in ((["--experts", "fused"], "--experts 'fused': choose one of matmul, moe"),
                          (["--backend", "portable", "--experts", "moe"], "--experts applies to the ONNX Runtime")):
        result = cli("build", production, tmp_path / "bad", *args)
        assert result.code == 2 and result.err.startswith("error: ") and message in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_parity_without_debug_outputs(checkpoint, production, tmp_path, cli):
    engine_dir = build_engine(production, tmp_path / "engine", "ort")
    report = check_engine(engine_dir, checkpoint, greedy_steps=4)
    assert report.passed and all(lp.hidden is None for lp in report.layers), report.failures
    result = cli("parity", engine_dir, "--checkpoint", checkpoint, "--steps", "4")
    assert result.code == 0 and "export --debug-outputs" in result.out, result.out
    assert runtime.load(engine_dir).forward([[5, 6]], outputs=("logits", "hidden"))[0].keys() == {"logits"}
