"""`eval_text` on `tiny`: perplexity and KL against an independent implementation (torch log-softmax over the
reference model's and the engine's full logits), an engine equal to its reference, a perturbed expert
detected, the compact reference file (its error bound, reuse, refusals), and the window plan.

The tiny model's weights are random: its next-token distributions are nearly flat (perplexity ~ 32000, the
vocabulary), so every KL here is small in absolute terms. The fp32 engine's KL is the floor of the uint16
reference (~2e-11 per token); a w2 x 1.05 expert gives ~2e-8, a noised expert (the parity test's) ~2e-6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.mixtral_ref import load_model
from mixtral_trt.parity import eval_text
from mixtral_trt.parity.reference_file import LEVELS, dequantize, quantize, read_reference, record_dtype
from mixtral_trt.parity.windows import plan_windows
from support.engines import engine, tiny_checkpoint

TEXT = Path(__file__).parents[2] / "docs" / "eval_text.txt"
CTX, TOKENS = 64, 300  # 4 windows, 128 scored tokens
DETECT_KL = 1e-9  # mean KL that flags an engine: 50x the fp32 engine's floor (measured 1.7e-11)


@pytest.fixture(scope="module")
def equal_run(ort_engine, checkpoint, root):
    return eval_text(ort_engine, TEXT, reference=checkpoint, ctx=CTX, max_tokens=TOKENS,
                     save_reference=root / "ref.bin")


@torch.inference_mode()
def oracle(engine_dir: Path, checkpoint: Path, ctx: int, n_tokens: int) -> dict:
    """llama-perplexity's figures written out directly: windows of BOS + ctx-1 tokens every ctx tokens, the
    last ctx/2 predictions of each scored, over full float64 log-softmaxes of both models."""
    eng, model = runtime.load(engine_dir), load_model(checkpoint)
    ids = eng.tokenizer.encode(TEXT.read_text(), bos=False)[:n_tokens]
    kl, nll_e, nll_r, agree, dp = [], [], [], [], []
    for start in range(0, n_tokens - ctx + 2, ctx):
        window = torch.tensor([[eng.tokenizer.bos_id, *ids[start:start + ctx - 1]]])
        lp = torch.log_softmax(model(window)[0].double(), -1)[ctx // 2 - 1:ctx - 1]  # reference [ctx/2, V]
        lq = torch.log_softmax(torch.from_numpy(eng.logits(window.numpy())[0]).double(), -1)[ctx // 2 - 1:ctx - 1]
        target = window[0, ctx // 2:, None]
        kl.append((lp.exp() * (lp - lq)).sum(-1))
        nll_e.append(-lq.gather(1, target)[:, 0])
        nll_r.append(-lp.gather(1, target)[:, 0])
        top = lp.argmax(-1, keepdim=True)
        agree.append(lq.argmax(-1) == top[:, 0])
        dp.append((lq.gather(1, top).exp() - lp.gather(1, top).exp()).abs()[:, 0])
    kl = torch.cat(kl).numpy()
    return {"perplexity": torch.cat(nll_e).mean().exp().item(),
            "reference_perplexity": torch.cat(nll_r).mean().exp().item(),
            "kl": kl, "top1_agreement": torch.cat(agree).double().mean().item(),
            "mean_abs_delta_p": torch.cat(dp).mean().item()}


def test_figures_equal_an_independent_implementation(checkpoint, root):
    """The parity test's broken expert (noise on layer 1, expert 3): every figure within 1e-4 relative."""
    broken = engine(tiny_checkpoint(root / "noised", perturb_expert=(1, 3)), root / "noised")
    ours = eval_text(broken, TEXT, reference=checkpoint, ctx=CTX, max_tokens=TOKENS)
    want = oracle(broken, checkpoint, CTX, TOKENS)
    s, kl = ours.summary, ours.kl
    figures = {"perplexity": (s["perplexity"], want["perplexity"]),
               "reference_perplexity": (s["reference_perplexity"], want["reference_perplexity"]),
               "kl mean": (kl["mean"], want["kl"].mean()), "kl p90": (kl["p90"], np.quantile(want["kl"], 0.9)),
               "kl p99": (kl["p99"], np.quantile(want["kl"], 0.99)), "kl max": (kl["max"], want["kl"].max()),
               "mean |dp|": (s["mean_abs_delta_p"], want["mean_abs_delta_p"])}
    rel = {k: abs(a / b - 1) for k, (a, b) in figures.items()}
    print({k: f"{a:.6g} vs {b:.6g} (rel {rel[k]:.1e})" for k, (a, b) in figures.items()})
    assert s["tokens"] == want["kl"].size == 4 * CTX // 2
    assert all(r < 1e-4 for r in rel.values()), rel
    assert abs(kl["median"] - np.median(want["kl"])) < 1e-10  # at the floor: most tokens avoid the expert
    assert s["top1_agreement"] == want["top1_agreement"]
    assert kl["mean"] > DETECT_KL


def test_engine_equal_to_its_reference(equal_run):
    s, kl = equal_run.summary, equal_run.kl
    print(s, equal_run.router_flip_rate)
    assert kl["max"] < 1e-6 and kl["mean"] < DETECT_KL / 10, kl
    assert s["top1_agreement"] == 1.0 and s["mean_abs_delta_p"] < 1e-6
    assert abs(s["perplexity"] / s["reference_perplexity"] - 1) < 1e-5
    assert equal_run.router_flip_rate == [0.0, 0.0]
    load = np.asarray(equal_run.expert_load)
    assert (load == np.asarray(equal_run.reference_expert_load)).all() and load.shape == (2, 8)
    assert (load.sum(1) == 2 * s["tokens"]).all()  # top-2: each token counted at two experts per layer


def test_a_scaled_expert_is_detected(checkpoint, root, equal_run):
    """One expert's w2 x 1.05 (layer 1, expert 3, the parity test's): mean KL above DETECT_KL, 100x the floor."""
    scaled = engine(tiny_checkpoint(root / "scaled", perturb_expert=(1, 3), scale=1.05), root / "scaled")
    report = eval_text(scaled, TEXT, reference_logits=root / "ref.bin", ctx=CTX, max_tokens=TOKENS)
    print(report.kl, "floor", equal_run.kl["mean"])
    assert report.kl["mean"] > DETECT_KL and report.kl["mean"] > 100 * equal_run.kl["mean"], report.kl
    assert report.router_flip_rate[0] == 0.0  # layer 0 is untouched


def test_saved_reference_gives_the_same_figures(ort_engine, root, equal_run):
    again = eval_text(ort_engine, TEXT, reference_logits=root / "ref.bin", ctx=CTX, max_tokens=TOKENS)
    assert again.summary == equal_run.summary
    assert again.reference_expert_load == equal_run.reference_expert_load
    header, records = read_reference(root / "ref.bin")
    assert (header.ctx, header.stride, header.scored, header.text_tokens) == (CTX, CTX, 128, TOKENS)
    assert (root / "ref.bin").stat().st_size < 128 * (32000 * 2 + 64) + 4096


@pytest.mark.parametrize("spread", [1.0, 40.0])
def test_compact_log_probs_within_the_stated_error(spread):
    """Each renormalized log-prob within `step` of the exact one; KL(approx || exact) below step^2 / 2."""
    gen = torch.Generator().manual_seed(0)
    logits = spread * torch.randn(16, 32000, generator=gen, dtype=torch.float64)  # flat to very peaked
    lp = torch.log_softmax(logits, -1)
    rec = np.zeros(16, record_dtype(32000, 0, 2))
    quantize(lp.numpy(), rec)
    approx = dequantize(rec)
    step = torch.from_numpy(rec["step"].astype(np.float64))
    assert torch.allclose(step, (lp.max(-1).values - lp.min(-1).values) / LEVELS, rtol=1e-6)
    err = (approx - lp).abs().max(-1).values
    kl = (approx.exp() * (approx - lp)).sum(-1)
    print(f"range {spread}: step {step.max():.2e}, max error {err.max():.2e}, KL {kl.max():.2e}")
    assert (err <= step * 1.001).all() and (kl <= step ** 2 / 2).all()


def test_reuse_of_another_runs_reference_is_refused(ort_engine, root, equal_run):
    with pytest.raises(MixtralTrtError, match=r"ref.bin: made for --ctx 64, but this run has 32"):
        eval_text(ort_engine, TEXT, reference_logits=root / "ref.bin", ctx=32, max_tokens=TOKENS)
    with pytest.raises(MixtralTrtError, match=r"made for the text \(sha256\)"):
        eval_text(ort_engine, "another text " * 100, reference_logits=root / "ref.bin", ctx=CTX, max_tokens=TOKENS)
    cut = root / "cut.bin"
    cut.write_bytes((root / "ref.bin").read_bytes()[:-10])
    with pytest.raises(MixtralTrtError, match="cut.bin: .* truncated or damaged"):
        eval_text(ort_engine, TEXT, reference_logits=cut, ctx=CTX, max_tokens=TOKENS)
    with pytest.raises(MixtralTrtError, match="not a reference-logits file"):
        eval_text(ort_engine, TEXT, reference_logits=TEXT, ctx=CTX, max_tokens=TOKENS)


def test_text_shorter_than_one_window(ort_engine, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Mixtral routes each token to two experts.")
    with pytest.raises(MixtralTrtError, match=r"short.txt: \d+ tokens, shorter than one window of ctx=64"):
        eval_text(ort_engine, short, ctx=CTX)
    with pytest.raises(MixtralTrtError, match=r"first 40 tokens, --max-tokens\): 40 tokens, shorter"):
        eval_text(ort_engine, TEXT, ctx=CTX, max_tokens=40)


def test_perplexity_alone_and_overlapping_windows(ort_engine, equal_run):
    """Without a reference: the engine's perplexity only. stride ctx/2 scores every token after the first
    half-window once."""
    alone = eval_text(ort_engine, TEXT, ctx=CTX, max_tokens=TOKENS)
    assert alone.kl is None and alone.summary["perplexity"] == equal_run.summary["perplexity"]
    assert alone.expert_load == equal_run.expert_load
    dense = eval_text(ort_engine, TEXT, ctx=CTX, stride=CTX // 2, max_tokens=TOKENS)
    assert dense.summary["tokens"] == dense.windows * CTX // 2 and dense.windows == 8


@pytest.mark.parametrize(("n", "ctx", "stride"), [(300, 64, 64), (300, 64, 32), (300, 64, 10), (300, 64, 50),
                                                  (63, 64, 64), (1000, 7, 3)])
def test_window_plan(n, ctx, stride):
    """Every scored token scored once, with at least ctx/2 tokens of context (BOS included) before it."""
    plan = plan_windows(n, ctx, stride)
    seen = []
    for w in plan.windows:
        assert w.start + ctx - 1 <= n and w.scored <= ctx // 2
        first = w.start + ctx - 1 - w.scored  # text index of the first target
        seen += range(first, w.start + ctx - 1)
        assert first - w.start + 1 >= ctx - ctx // 2  # tokens in the window before it (BOS counted)
    assert len(seen) == len(set(seen)) == plan.scored
    ids = np.arange(n)
    w = plan.windows[-1]
    assert w.ids(ids, -1, ctx)[0] == -1 and (w.targets(ids, ctx) == w.ids(ids, -1, ctx)[-w.scored:]).all()


def test_an_engine_as_the_reference(ort_engine, equal_run):
    """--reference ENGINE: the same engine against itself reads the format's floor, and its routing is used."""
    report = eval_text(ort_engine, TEXT, reference=ort_engine, ctx=CTX, max_tokens=TOKENS)
    s = report.summary
    assert report.reference.startswith("engine ") and "(ort, fp32)" in report.reference
    assert s["reference_perplexity"] == pytest.approx(s["perplexity"], rel=1e-6) and s["top1_agreement"] == 1.0
    assert report.kl["max"] < 1e-9 and report.router_flip_rate == [0.0, 0.0]
    assert report.reference_expert_load == equal_run.expert_load
