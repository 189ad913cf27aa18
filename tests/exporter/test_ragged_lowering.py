"""Ragged attention (`build --ragged`: exporter/lowering/ragged.py + runtime/ragged.py): rows with different pasts
and different numbers of new tokens packed into one call, judged against mixtral_ref on each row's whole sequence
(logits and present keys / values), with and without a sliding window; the same engine's ordinary calls pass
parity (Engine.forward feeds the visibility a padded batch means). The engines are built with the default kernels:
our CPU kernels where the library is built, whose RaggedAttention then attends (lowering/ragged_attention.py);
`test_canonical_attention_engine` builds the canonical graph's (--cpu-kernels ort) beside it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.contract import ATTENTION_VISIBLE, MODEL_FILE
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.lowering.ragged import expose_visibility
from mixtral_trt.exporter.lowering.ragged_attention import OP, attention_form
from mixtral_trt.parity import TOLERANCES
from mixtral_trt.parity.run import run_parity
from mixtral_trt.runtime.ragged import PackedCache, RaggedRow, ragged_feeds, split_present, split_tokens
from support.models import SLIDING_TOP3, export_dir, random_model

ROWS = ((7, 1), (12, 1), (4, 6), (0, 3), (9, 4))  # (past, new tokens): decode rows, chunks, a fresh prompt


@pytest.fixture(scope="module", params=[5, None], ids=["window5", "full"])
def ragged(request, tmp_path_factory):
    """(reference, the `build --ragged` engine, its runner, the onnx_dir)."""
    cfg = SLIDING_TOP3.replace(sliding_window=request.param)
    reference = random_model(cfg, seed=11)
    onnx_dir = export_dir(tmp_path_factory, reference, "fp32", f"ragged-{request.param}", debug_outputs=False)
    engine = runtime.load(build_engine(onnx_dir, tmp_path_factory.mktemp("engines") / "ort", "ort", ragged=True))
    return reference, engine, engine.runner, onnx_dir


def test_graph_takes_visibility(ragged):
    _, engine, runner, _ = ragged
    assert ATTENTION_VISIBLE in runner.input_names and "attention_mask" in runner.input_names
    assert engine.contract.ragged and engine.contract.names("attention_visible", "inputs") == [ATTENTION_VISIBLE]
    lowered = onnx.load(str(engine.path / MODEL_FILE), load_external_data=False)
    assert not [n.name for n in lowered.graph.node if n.op_type == "And"]  # the mask's product is gone
    assert not (engine.path / "genai_config.json").exists()  # onnxruntime-genai feeds no visibility
    ours = "cpu_kernels" in engine.manifest.backend_info
    assert engine.manifest.backend_info["ragged_attention"] == attention_form("float", ours)
    ops = [n.op_type for n in lowered.graph.node]
    if ours:  # each layer's attention core is one op: no softmax, no expanded K / V left
        assert ops.count(OP) == engine.config.num_layers and "Softmax" not in ops, sorted(set(ops))
        assert OP in engine.manifest.backend_info["cpu_kernels"]["ops"]
    else:
        assert OP not in ops and "Softmax" in ops
    with pytest.raises(MixtralTrtError, match="already takes attention_visible"):
        expose_visibility(ir.load(engine.path / MODEL_FILE))


def test_ordinary_calls_pass_parity(ragged):
    """Single prompts, a left-padded batch and greedy decoding through Engine.forward, against the reference."""
    reference, engine, _, _ = ragged
    report = run_parity(engine, reference, greedy_steps=6)
    assert report.passed, report.failures
    assert report.logits.max_rel <= TOLERANCES["fp32"].logits_rel


def test_the_scheduler_serves_a_ragged_engine(ragged):
    """Today's Scheduler (a left-padded batch, prompts in 4-token chunks beside decode steps) on a ragged engine:
    every request's greedy tokens and their logprobs equal the reference's on its prompt alone (1e-4)."""
    from mixtral_trt.runtime.sampling import SamplingParams
    from mixtral_trt.runtime.scheduler import Scheduler

    reference, engine, _, _ = ragged
    rng = np.random.default_rng(6)
    prompts = [rng.integers(3, engine.config.vocab_size, n).tolist() for n in (5, 13, 9)]
    scheduler = Scheduler(engine, prefix_cache_gb=0, prefill_chunk=4)
    requests = []
    for prompt in prompts:  # each joins while the earlier ones decode
        requests.append(scheduler.submit(prompt, SamplingParams(max_new_tokens=6, ignore_eos=True, logprobs=0)))
        scheduler.step()
    scheduler.run_until_idle()
    for prompt, request in zip(prompts, requests, strict=True):
        ids, want = list(prompt), []
        with torch.no_grad():
            for _ in range(6):
                logprobs = torch.log_softmax(reference(torch.tensor([ids]))[0, -1].double(), -1)
                ids.append(int(logprobs.argmax()))
                want.append(float(logprobs[ids[-1]]))
        done = request.completion()
        assert done.token_ids == ids[len(prompt):], (prompt, done.token_ids)
        got = [lp.logprob for lp in done.logprobs]
        assert np.allclose(got, want, atol=1e-4, rtol=0), (got, want)


def test_with_an_int8_cache(ragged, tmp_path):
    """`--ragged --kv-cache int8`: ordinary calls (a left-padded batch) equal the int8 engine without --ragged's,
    and a packed call of ragged rows equals their separate calls on it (the codes and scales packed alike)."""
    _, _, _, onnx_dir = ragged
    plain = runtime.load(build_engine(onnx_dir, tmp_path / "plain", "ort", kv_cache="int8"))
    both = runtime.load(build_engine(onnx_dir, tmp_path / "ragged", "ort", kv_cache="int8", ragged=True))
    assert both.contract.ragged and both.contract.kv_cache == "int8"
    ours = "cpu_kernels" in both.manifest.backend_info  # RaggedAttention reads float caches: the canonical graph
    assert both.manifest.backend_info["ragged_attention"] == attention_form("int8", ours) != OP
    rng = np.random.default_rng(8)
    ids = rng.integers(3, plain.config.vocab_size, (2, 9))
    mask = np.ones((2, 9), np.int64)
    mask[0, :4] = 0  # row 0 left-padded
    want, _ = plain.forward(ids, attention_mask=mask, position_ids=np.maximum(np.cumsum(mask, 1) - 1, 0))
    got, _ = both.forward(ids, attention_mask=mask, position_ids=np.maximum(np.cumsum(mask, 1) - 1, 0))
    assert np.abs(got["logits"] - want["logits"]).max() <= 1e-5
    rows, separate = [], []
    for past, new in ((6, 1), (3, 4)):
        seq = rng.integers(3, plain.config.vocab_size, past + new)
        _, cache = plain.forward(seq[None, :past])
        separate.append(plain.forward(seq[None, past:], cache)[0]["logits"][0])
        rows.append(RaggedRow(*cache.editable().row_kv(0), seq[past:].tolist()))
    feeds, layout = ragged_feeds(both.contract, rows)
    for got_row, want_row in zip(split_tokens(both.runner.run(feeds, ["logits"])["logits"], layout), separate,
                                 strict=True):
        assert np.abs(got_row - want_row).max() <= 1e-5


@pytest.mark.parametrize("backend", ["ort-gqa", "portable"])
def test_other_backends_are_refused(ragged, tmp_path, backend):
    _, _, _, onnx_dir = ragged
    with pytest.raises(MixtralTrtError, match=f"--ragged applies to --backend ort .* not --backend {backend}"):
        build_engine(onnx_dir, tmp_path / "e", backend, ragged=True)
    assert not (tmp_path / "e").exists()


def _check_packed_rows(reference, engine, runner) -> dict[str, np.ndarray]:
    """One packed call of ROWS against the reference on each row's whole sequence; returns the call's outputs."""
    cfg, contract = engine.config, engine.contract
    rng = np.random.default_rng(3)
    sequences = [rng.integers(3, cfg.vocab_size, past + new).tolist() for past, new in ROWS]
    rows = []
    for seq, (past, _) in zip(sequences, ROWS, strict=True):
        if past:
            _, cache = engine.forward(np.asarray([seq[:past]]))
            keys, values = cache.row_kv(0)
        else:
            keys = values = [np.zeros((cfg.num_kv_heads, 0, cfg.head_dim), np.float32)] * cfg.num_layers
        rows.append(RaggedRow([np.asarray(k) for k in keys], [np.asarray(v) for v in values], seq[past:]))
    feeds, layout = ragged_feeds(contract, rows)
    key_names, value_names = contract.names("present_key"), contract.names("present_value")
    out = runner.run(feeds, ["logits", *key_names, *value_names])
    logits = split_tokens(out["logits"], layout)
    presents = {n: split_present(out[n], layout) for n in key_names + value_names}
    tol = TOLERANCES["fp32"].logits_rel
    for r, (seq, (past, new)) in enumerate(zip(sequences, ROWS, strict=True)):
        with torch.no_grad():
            ref = reference.run(torch.tensor([seq]))
        want = ref.logits[0, past:].numpy()  # [n, V]
        err = float(np.abs(logits[r] - want).max() / np.abs(want).max())
        assert logits[r].shape == (new, cfg.vocab_size) and err <= tol, f"row {r} (past {past}, new {new}): {err}"
        for layer, (k_ref, v_ref) in enumerate(ref.present):
            for name, want_kv in ((key_names[layer], k_ref), (value_names[layer], v_ref)):
                got, want_kv = presents[name][r], want_kv[0].numpy()  # [G, past + new, D]
                err = float(np.abs(got - want_kv).max() / np.abs(want_kv).max())
                assert got.shape == want_kv.shape and err <= tol, f"row {r} {name}: {err}"
    return out


def test_packed_rows_match_the_reference(ragged):
    reference, engine, runner, _ = ragged
    _check_packed_rows(reference, engine, runner)


def test_canonical_attention_engine(ragged, tmp_path):
    """`--ragged --cpu-kernels ort`: the canonical graph's attention (no op), its packed call against the reference
    and, where the default engine runs RaggedAttention, against that engine's call (1e-5 of max |logit|)."""
    reference, engine, runner, onnx_dir = ragged
    canonical = runtime.load(build_engine(onnx_dir, tmp_path / "ort", "ort", ragged=True, cpu_kernels="ort"))
    assert canonical.manifest.backend_info["ragged_attention"] == attention_form("float", False)
    want = _check_packed_rows(reference, canonical, canonical.runner)
    if "cpu_kernels" in engine.manifest.backend_info:
        got = _check_packed_rows(reference, engine, runner)
        scale = float(np.abs(want["logits"]).max())
        assert np.abs(got["logits"] - want["logits"]).max() <= 1e-5 * scale


def test_packed_cache_carries_rows_over_steps(ragged):
    """A running batch in one PackedCache: two prompts in one call, then decode steps of one token per row while
    a third row joins and enters in chunks beside them; every row's logits at every step against the reference
    on that row's whole sequence so far (the present of each call is the next call's past, untouched)."""
    reference, engine, runner, _ = ragged
    cfg, contract = engine.config, engine.contract
    rng = np.random.default_rng(4)
    steps = [  # new tokens per row; the third row joins at the third call
        [5, 8], [1, 1], [1, 1, 4], [1, 1, 3], [1, 0, 1], [1, 1, 1],
    ]
    cache, sequences = PackedCache.empty(contract, 2), [[], [], []]
    names = contract.names("present_key") + contract.names("present_value")
    tol = TOLERANCES["fp32"].logits_rel
    for step, counts in enumerate(steps):
        if len(counts) > cache.rows:
            cache = cache.with_rows(len(counts) - cache.rows)
        new = [rng.integers(3, cfg.vocab_size, n).tolist() for n in counts]
        feeds, new_owner, new_pos = cache.feeds(contract, new)
        out = runner.run(feeds, ["logits", *names])
        cache = cache.advanced(contract, out, new_owner, new_pos)
        for r, ids in enumerate(new):
            sequences[r] += ids
            if not ids:
                continue
            with torch.no_grad():
                want = reference(torch.tensor([sequences[r]]))[0, -len(ids):].numpy()  # [n, V]
            got = out["logits"][0, new_owner == r]
            err = float(np.abs(got - want).max() / np.abs(want).max())
            assert err <= tol, f"step {step} row {r}: {err}"
    assert cache.lengths.tolist() == [len(s) for s in sequences] and cache.length == sum(map(len, sequences))


def test_bad_rows_are_refused(ragged):
    _, engine, _, _ = ragged
    g, d = engine.config.num_kv_heads, engine.config.head_dim
    empty = [np.zeros((g, 0, d), np.float32)] * engine.config.num_layers
    with pytest.raises(MixtralTrtError, match="at least one new token"):
        ragged_feeds(engine.contract, [RaggedRow(empty, empty, [])])
    long = [np.zeros((g, engine.max_seq, d), np.float32)] * engine.config.num_layers
    with pytest.raises(MixtralTrtError, match="exceeds the engine's context"):
        ragged_feeds(engine.contract, [RaggedRow(long, long, [5])])
    with pytest.raises(MixtralTrtError, match="at least one new token"):
        PackedCache.empty(engine.contract, 2).feeds(engine.contract, [[], []])
    with pytest.raises(MixtralTrtError, match="over 2 rows got new tokens for 1"):
        PackedCache.empty(engine.contract, 2).feeds(engine.contract, [[5]])
