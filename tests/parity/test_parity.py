"""Parity: the metrics on crafted inputs, passing engines (fp32 ort/portable, fp16 ort), a broken engine
that must fail (library and CLI exit 1), and the JSON / PNG outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.mixtral_ref import load_model
from mixtral_trt.parity import TOLERANCES, check_engine
from mixtral_trt.parity.metrics import greedy_match, tensor_error, topk_flips
from support.engines import engine, tiny_checkpoint


# ---- metrics ------------------------------------------------------------------------------------------
def test_tensor_error_figures():
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    got = ref + np.array([[0.0, 0.02], [-0.01, 0.0]], np.float32)
    err = tensor_error(got, ref, rel_tol=1e-2)
    assert err.max_abs == pytest.approx(0.02, rel=1e-5) and err.mean_abs == pytest.approx(0.0075, rel=1e-5)
    assert err.max_rel == pytest.approx(0.02 / 4, rel=1e-5) and err.passed  # 0.005 <= 0.01
    assert not tensor_error(got, ref, rel_tol=1e-3).passed  # 0.005 > 0.001


def test_router_flips_are_classified_by_the_reference_margin():
    ref = np.array([[5.0, 4.0, 1.0, 0.0],  # clear margin between 2nd and 3rd: 3.0
                    [5.0, 2.0, 1.99, 0.0],  # near tie between 2nd and 3rd: 0.01
                    [3.0, 2.0, 0.0, -1.0]])
    got = np.array([[5.0, 0.5, 1.0, 0.0],  # expert 1 dropped for 2: unexplained
                    [5.0, 1.98, 1.99, 0.0],  # swapped at the near tie
                    [3.0, 2.0, 0.0, -1.0]])
    flips = topk_flips(got, ref, k=2, tie_margin=0.05)
    assert (flips.positions, flips.near_tie, flips.unexplained) == (3, 1, 1)
    assert flips.agreement == pytest.approx(1 / 3)
    assert topk_flips(got, ref, k=4, tie_margin=0.0).unexplained == 0  # all experts chosen: no flip


def test_greedy_divergence_is_explained_only_at_a_near_tie():
    logits = [np.array([0.0, 3.0, 2.999]), np.array([1.0, 0.0, 5.0])]
    assert greedy_match([1, 2], [1, 2], logits, 0.01).exact
    tie = greedy_match([2, 0], [1, 2], logits, 0.01)  # step 0: 3.0 vs 2.999
    assert (tie.matched, tie.explained) == (0, True) and tie.divergence_margin == pytest.approx(0.001)
    clear = greedy_match([1, 0], [1, 2], logits, 0.01)  # step 1: 5.0 vs 1.0
    assert (clear.matched, clear.explained) == (1, False)


# ---- engines ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("backend", "dtype"), [("ort", "fp32"), ("portable", "fp32"), ("ort", "fp16")])
def test_engine_passes_parity(checkpoint, root, backend, dtype):
    report = check_engine(engine(checkpoint, root, backend, dtype), checkpoint, greedy_steps=12)
    summary = (f"{backend}/{dtype}: logits rel {report.logits.max_rel:.2e}, top-1 {report.top1.agreement:.2%}, "
               f"hidden rel {[round(lp.hidden.max_rel, 9) for lp in report.layers]}, "
               f"greedy {[g.matched for g in report.greedy]}")
    print(summary)
    assert report.passed, f"{summary}; failures: {report.failures}"
    assert report.logits.max_rel < TOLERANCES[dtype].logits_rel
    assert len(report.layers) == 2 and all(lp.flips.positions > 100 for lp in report.layers)
    if dtype == "fp32":
        assert all(g.exact for g in report.greedy), summary


def test_broken_engine_fails_parity(checkpoint, tmp_path, cli):
    """An engine built from a checkpoint with one perturbed expert must fail against the original."""
    broken = tiny_checkpoint(tmp_path, perturb_expert=(1, 3))
    eng = engine(broken, tmp_path)
    result = cli("parity", eng, "--checkpoint", checkpoint, "--json", tmp_path / "p.json",
                 "--plot", tmp_path / "p.png", "--steps", "8")
    assert result.code == 1, result.out + result.err
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["passed"] is False and report["failures"]
    # layer 0 is untouched; the perturbation shows in layer 1
    assert report["layers"][0]["hidden_rel"] < 1e-5 < report["layers"][1]["hidden_rel"], report["layers"]
    assert "FAIL" in result.out and (tmp_path / "p.png").stat().st_size > 10_000


def test_report_json_and_plot(checkpoint, ort_engine, tmp_path, cli):
    result = cli("parity", ort_engine, "--checkpoint", checkpoint, "--json", tmp_path / "r.json",
                 "--plot", tmp_path / "r.png", "--steps", "6")
    assert result.code == 0, result.out + result.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True and report["backend"] == "ort" and report["dtype"] == "fp32"
    assert {"max_abs", "mean_abs", "max_rel", "top1_agreement"} <= set(report["logits"])
    assert {"layer", "hidden_max_abs", "hidden_rel", "router_flips", "router_near_tie_flips", "tokens"} \
        <= set(report["layers"][0])
    assert report["greedy"][0]["steps"] == 6 and report["greedy"][0]["exact"] is True
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parity_refuses_another_models_checkpoint(ort_engine, tmp_path, cli):
    from mixtral_trt.mixtral_ref import get_preset
    from mixtral_trt.mixtral_ref.writer import init_checkpoint

    other = init_checkpoint(get_preset("tiny").replace(num_experts=4), tmp_path / "other")
    result = cli("parity", ort_engine, "--checkpoint", other)
    assert result.code == 2 and "config differs from the engine's" in result.err


def test_engine_and_reference_agree_on_the_oracle(checkpoint, ort_engine):
    """Guard for the parity tool itself: its reference is mixtral_ref in float32 from the checkpoint."""
    eng = runtime.load(ort_engine)
    ids = np.random.default_rng(0).integers(0, 32000, (1, 9))
    with torch.no_grad():
        ref = load_model(checkpoint)(torch.from_numpy(ids)).numpy()
    assert np.abs(eng.logits(ids) - ref).max() < 1e-5
