"""Every way a load or a call is refused: tampered or missing artifacts, an onnxruntime too old, a prompt
beyond the context, ids outside the vocabulary, too large a batch, bad shapes and settings, no tokenizer.
Each is a MixtralTrtError with one line naming what is wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mixtral_trt import runtime
from mixtral_trt.chat.tokenizer import mistral_common_file
from mixtral_trt.common.errors import MixtralTrtError


@pytest.fixture
def engine_copy(tiny_engine_dir, tmp_path):
    return shutil.copytree(tiny_engine_dir, tmp_path / "engine")


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("artifact", ["model.onnx.data", "tokenizer.model", "model.onnx"])
def test_a_tampered_artifact_is_refused(engine_copy, artifact):
    path = engine_copy / artifact
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit different
    path.write_bytes(bytes(data))
    with pytest.raises(MixtralTrtError) as e:
        runtime.load(engine_copy)
    assert artifact in _one_line(e) and "sha256" in str(e.value)


def test_missing_and_truncated_artifacts_and_manifest(engine_copy):
    data = engine_copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(MixtralTrtError, match="truncated"):
        runtime.load(engine_copy)
    (engine_copy / "tokenizer.model").unlink()
    data.unlink()
    with pytest.raises(MixtralTrtError, match="model.onnx.data: artifact listed in manifest.json is missing"):
        runtime.load(engine_copy)
    (engine_copy / "manifest.json").unlink()
    with pytest.raises(MixtralTrtError, match="manifest.json: missing"):
        runtime.load(engine_copy)


def test_an_onnxruntime_older_than_the_verified_release_is_refused(tiny_engine_dir, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.30.0")
    with pytest.raises(MixtralTrtError, match=r"onnxruntime 1.30.0 is older than 1.31") as e:
        runtime.load(tiny_engine_dir)
    _one_line(e)


def test_prompts_beyond_the_context_are_refused(tiny_engine):
    assert tiny_engine.max_seq == 256
    with pytest.raises(MixtralTrtError, match="prompt: 250 tokens \\+ max_new_tokens 7 exceed the engine's context"):
        tiny_engine.generate([1] * 250, max_new_tokens=7)
    with pytest.raises(MixtralTrtError, match="prompt 1: 300 tokens"):
        tiny_engine.generate([[1, 2], [1] * 300], max_new_tokens=1)
    _, cache = tiny_engine.forward(np.ones((1, 250), np.int64))
    with pytest.raises(MixtralTrtError, match="250 cached \\+ 7 new tokens exceed the engine's context of 256"):
        tiny_engine.forward(np.ones((1, 7), np.int64), cache)


@pytest.mark.parametrize(("ids", "match"), [
    ([1, 5, 32000], "token id 32000 is outside the vocabulary \\[0, 32000\\)"),
    ([1, -4], "token id -4 is outside the vocabulary"),
    ([[1, 2], [1, 99999]], "prompt 1: token id 99999"),
    ([], "prompt: empty"),
])
def test_ids_outside_the_vocabulary_are_refused(tiny_engine, ids, match):
    with pytest.raises(MixtralTrtError, match=match) as e:
        tiny_engine.generate(ids, max_new_tokens=2)
    _one_line(e)


def test_forward_checks_batch_shapes_and_types(tiny_engine):
    with pytest.raises(MixtralTrtError, match="batch 5 exceeds the engine's max batch 4"):
        tiny_engine.forward(np.ones((5, 3), np.int64))
    with pytest.raises(MixtralTrtError, match="expected integer token ids, got float"):
        tiny_engine.forward(np.ones((1, 3), np.float32))
    with pytest.raises(MixtralTrtError, match="attention_mask: expected shape \\(1, 3\\)"):
        tiny_engine.forward(np.ones((1, 3), np.int64), attention_mask=np.ones((1, 4), np.int64))
    _, cache = tiny_engine.forward(np.ones((2, 3), np.int64))
    with pytest.raises(MixtralTrtError, match="does not match the cache's batch 2"):
        tiny_engine.forward(np.ones((1, 1), np.int64), cache)


def test_bad_sampling_settings_are_refused(tiny_engine):
    with pytest.raises(MixtralTrtError, match="^temperature=-1"):
        tiny_engine.generate("hi", temperature=-1)
    with pytest.raises(MixtralTrtError, match="unexpected keyword argument 'temprature'"):
        tiny_engine.generate("hi", temprature=0.5)
    with pytest.raises(MixtralTrtError, match="either params or keyword settings"):
        tiny_engine.generate("hi", runtime.SamplingParams(), top_k=3)


def test_text_needs_this_models_tokenizer(tiny_engine_dir, engine_copy):
    (engine_copy / "tokenizer.model").unlink()
    eng = runtime.load(engine_copy, verify=False)
    assert eng.generate([1, 7, 9], max_new_tokens=3).text is None  # ids still work without a tokenizer
    with pytest.raises(MixtralTrtError, match="no tokenizer file"):
        eng.generate("hello", max_new_tokens=3)
    other = runtime.load(tiny_engine_dir, tokenizer=mistral_common_file("v3"))
    with pytest.raises(MixtralTrtError, match="32768 tokens, but the engine's vocabulary has 32000"):
        other.chat([{"role": "user", "content": "hi"}])
