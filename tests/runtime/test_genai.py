"""onnxruntime-genai opens our ONNX Runtime engine directories as they are (genai_config.json, tokenizer.json,
tokenizer_config.json written by export/build) and decodes greedily exactly as Engine.generate, from ids and
from text, for the canonical graph and for GroupQueryAttention engines with both past_present_share_buffer
settings. The config is none of the presets. Skipped where onnxruntime-genai (dev extra) is absent."""

from __future__ import annotations

import json
import shutil

import pytest

from mixtral_trt import runtime
from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref.writer import init_checkpoint

og = pytest.importorskip("onnxruntime_genai")

UNSEEN = MixtralConfig(vocab_size=32000, hidden_size=48, intermediate_size=80, num_layers=3, num_heads=6,
                       num_kv_heads=2, head_dim=16, num_experts=5, top_k=2, sliding_window=24,
                       max_position_embeddings=1024)
PROMPT = "Mixtral routes each token to two of its experts; explique-moi pourquoi, s'il te plaît. 日本語"
STEPS = 16


@pytest.fixture(scope="module")
def engine_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("genai")
    ckpt = init_checkpoint(UNSEEN, root / "ckpt", seed=11)
    onnx_dir = export_checkpoint(ckpt, root / "onnx", max_seq=256, max_batch=2)
    return {b: build_engine(onnx_dir, root / b, b) for b in ("ort", "ort-gqa")}


def _genai_greedy(directory, ids: list[int], steps: int) -> list[int]:
    model = og.Model(str(directory))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def _with_share_buffer(directory, share: bool, tmp_path):
    """A copy of the engine directory whose genai_config.json sets past_present_share_buffer."""
    copy = shutil.copytree(directory, tmp_path / f"share-{share}")
    config = json.loads((copy / "genai_config.json").read_text())
    config["search"]["past_present_share_buffer"] = share
    (copy / "genai_config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("backend, share", [("ort", False), ("ort-gqa", True), ("ort-gqa", False)])
def test_genai_decodes_as_engine_generate(engine_dirs, backend, share, tmp_path):
    directory = engine_dirs[backend]
    built_share = json.loads((directory / "genai_config.json").read_text())["search"]["past_present_share_buffer"]
    assert built_share == (backend == "ort-gqa")
    if share != built_share:
        directory = _with_share_buffer(directory, share, tmp_path)
    engine = runtime.load(engine_dirs[backend])
    tokenizer = og.Tokenizer(og.Model(str(directory)))
    tokenizer.update_options(add_special_tokens="true")
    ids = [int(i) for i in tokenizer.encode(PROMPT)]  # from text, with genai's tokenizer
    assert ids == engine.tokenizer.encode(PROMPT)
    want = engine.generate(PROMPT, max_new_tokens=STEPS, ignore_eos=True)
    got = _genai_greedy(directory, ids, STEPS)  # from ids
    assert got == want.token_ids[: len(got)] and len(got) == STEPS, f"genai {got}\nours  {want.token_ids}"
    # genai keeps the space of a leading "▁" piece (its decoder has no Strip step): compare whole sequences
    assert tokenizer.decode(ids + got) == engine.tokenizer.decode(ids + want.token_ids)


def test_genai_chat_template(engine_dirs):
    engine = runtime.load(engine_dirs["ort"])
    tokenizer = og.Tokenizer(og.Model(str(engine_dirs["ort"])))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour !"},
                {"role": "assistant", "content": "Salut."}, {"role": "user", "content": PROMPT}]
    text = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=False)
    assert [int(i) for i in tokenizer.encode(text)] == engine.tokenizer.encode_chat(messages)
