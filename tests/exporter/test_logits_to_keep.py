"""ONNX Runtime engines' optional `logits_to_keep` input (exporter/lowering/logits_to_keep.py): the LM head on the
last N positions only, judged against the same engine's whole result (out[:, -N:]: fp32, 1e-5 of max |logit|, the
LM head's rows then run as a smaller GEMM) and against the reference through the untouched default; the cache it
leaves is the same, and callers that do not feed it (onnxruntime-genai, parity) see no change."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import LOGITS_TO_KEEP, MODEL_FILE
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.plugins import cpu_kernels
from support.models import GQA_TOP3, export_dir, random_model

TOL = 1e-5  # of max |logit|: float32 summation order only
ENGINES = {  # name: build options
    "ort": {"backend": "ort"},  # canonical attention, ONNX Runtime's MatMul LM head
    "ort-gqa": {"backend": "ort-gqa"},
    "ort-gqa-ours": {"backend": "ort-gqa", "cpu_kernels": "ours", "cpu_linears": "lm_head"},  # our Linear
}


@pytest.fixture(scope="module")
def reference_and_export(tmp_path_factory):
    model = random_model(GQA_TOP3, seed=3)
    return model, export_dir(tmp_path_factory, model, "fp32", "keep", max_seq=128, debug_outputs=False)


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request, reference_and_export, tmp_path_factory):
    options = ENGINES[request.param]
    if options.get("cpu_kernels") == "ours" and cpu_kernels.library_path() is None:
        pytest.skip("our CPU kernels' library is not built (make cpu-kernels)")
    _, onnx_dir = reference_and_export
    return runtime.load(build_engine(onnx_dir, tmp_path_factory.mktemp("engines") / request.param, **options))


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err <= TOL, f"{what}: {err:.2e} of max |logit| from the whole result's columns (tolerance {TOL:.0e})"


def test_the_input_is_an_overridable_scalar_defaulting_to_every_position(engine, reference_and_export):
    model = onnx.load(str(engine.path / MODEL_FILE), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    default = next(t for t in model.graph.initializer if t.name == LOGITS_TO_KEEP)
    assert LOGITS_TO_KEEP in inputs and onnx.numpy_helper.to_array(default).tolist() == 0
    assert inputs[LOGITS_TO_KEEP].type.tensor_type.elem_type == onnx.TensorProto.INT64
    reference, _ = reference_and_export
    ids = np.random.default_rng(0).integers(3, GQA_TOP3.vocab_size, (2, 9))
    with torch.no_grad():
        want = reference(torch.from_numpy(ids)).numpy()
    _close(engine.forward(ids)[0]["logits"], want, "no logits_to_keep fed, against the reference")


@pytest.mark.parametrize("keep", [1, 3, 9, 40])
def test_the_last_columns_and_the_same_cache(engine, keep):
    ids = np.random.default_rng(keep).integers(3, GQA_TOP3.vocab_size, (2, 9))
    full, full_cache = engine.forward(ids)
    calls = []
    run = engine.runner.run

    def spy(feeds, names, *args):
        out = run(feeds, names, *args)
        calls.append((int(np.asarray(feeds.get(LOGITS_TO_KEEP, 0))), out["logits"].shape))
        return out

    engine.runner.run = spy
    try:
        kept, kept_cache = engine.forward(ids, logits_to_keep=keep)
    finally:
        del engine.runner.run
    _close(kept["logits"], full["logits"][:, -min(keep, 9):], f"logits_to_keep={keep}")
    if keep < 9:  # the graph computed only those rows: what ONNX Runtime returned is already [B, keep, V]
        assert calls == [(keep, (2, keep, GQA_TOP3.vocab_size))], calls
    step = np.array([[5], [7]])
    _close(engine.forward(step, kept_cache)[0]["logits"], engine.forward(step, full_cache)[0]["logits"],
           "the decode step after a prefill that kept one column")


def test_a_left_padded_batch_keeps_its_last_column(engine):
    """An explicit mask (generation's left-padded prefill): every row's last column is its last prompt token."""
    ids = np.random.default_rng(5).integers(3, GQA_TOP3.vocab_size, (2, 7))
    mask = np.ones((2, 7), np.int64)
    mask[1, :3] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    full, _ = engine.forward(ids, attention_mask=mask, position_ids=positions)
    kept, _ = engine.forward(ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
    _close(kept["logits"], full["logits"][:, -1:], "left-padded batch, logits_to_keep=1")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_a_bad_count_is_an_error_naming_the_argument(engine, bad):
    with pytest.raises(MixtralTrtError, match="logits_to_keep"):
        engine.forward(np.array([[3, 4]]), logits_to_keep=bad)
