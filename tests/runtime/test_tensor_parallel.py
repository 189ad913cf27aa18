"""Tensor-parallel engines on CPU: rank graphs cut at their collectives, run as ONNX Runtime sessions in
separate rank processes, the all-reduces and all-gather done by torch.distributed (gloo) between them.

Oracles: HF transformers (the acceptance: an unseen checkpoint exported with --tensor-parallel 2, logits
< 1e-4 relative, greedy equal) and mixtral_ref (hidden states, KV cache, decoding, N = 4 with fewer kv heads
than ranks, top-3 with a sliding window, int4 experts). A rank that dies or hangs fails the call in one
line. Engines are loaded once per module: starting rank processes is the cost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import numpy as np
import pytest
import torch
from conftest import make_hf_model

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.mixtral_ref import get_preset, load_model
from mixtral_trt.mixtral_ref.writer import init_checkpoint
from support.models import SLIDING_TOP3, random_model

REL = 1e-4  # fp32 logits against HF / mixtral_ref


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tensor-parallel")


@pytest.fixture(scope="module")
def hf(root):
    """An unseen HF checkpoint (seed 11; vocab 131 splits unevenly) and its transformers model."""
    model = make_hf_model(seed=11)
    model.save_pretrained(root / "hf")
    return root / "hf", model


@pytest.fixture(scope="module")
def tp2(hf, root):
    """Exported with --tensor-parallel 2 and built for ort through the command line; loaded once."""
    import sys

    from mixtral_trt.cli import main

    argv = sys.argv
    try:
        for args in (["export", hf[0], root / "onnx-tp2", "--tensor-parallel", "2", "--max-seq", "128",
                      "--debug-outputs"],
                     ["build", root / "onnx-tp2", root / "engine-tp2", "--backend", "ort"]):
            sys.argv = ["mixtral-export", *map(str, args)]
            with pytest.raises(SystemExit) as done:
                main()
            assert done.value.code in (0, None)
    finally:
        sys.argv = argv
    engine = runtime.load(root / "engine-tp2")
    yield engine
    engine.runner.close()


def hf_greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def test_tp2_matches_hf_transformers(tp2, hf, root):
    """Acceptance: logits < 1e-4 relative and greedy equal, the collectives done across processes, each
    rank's weight files about half of the whole."""
    _, model = hf
    ids = np.random.default_rng(0).integers(3, 131, (2, 11))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    got = tp2.logits(ids)
    print(f"tp2 vs HF transformers: logits max rel err {rel_err(got, want):.2e}")
    assert rel_err(got, want) < REL, f"logits rel err {rel_err(got, want):.2e}"
    prompt = ids[0, :6].tolist()
    completion = tp2.generate(prompt, max_new_tokens=10)
    reference = hf_greedy(model, prompt, 10)
    n = len(completion.token_ids)
    assert completion.token_ids == reference[:n] and (n == 10 or completion.finish_reason == "stop"), \
        (completion.token_ids, reference)
    pids = tp2.runner.pids
    assert len(set(pids)) == 2 and os.getpid() not in pids and all(os.path.exists(f"/proc/{p}") for p in pids)
    whole = sum(p.numel() for p in model.parameters()) * 4
    for rank in range(2):
        size = (root / "onnx-tp2" / f"rank{rank}" / "model.onnx.data").stat().st_size
        print(f"rank {rank} weights: {size} bytes = {size / whole:.4f} of {whole}")
        assert abs(size / whole - 0.5) < 0.02, f"rank {rank}: {size} of {whole} bytes"


def test_tp2_hidden_states_cache_and_decoding_match_the_reference(tp2, hf):
    ref = load_model(hf[0])
    b, t = 2, 7
    ids = np.random.default_rng(1).integers(3, 131, (b, t))
    mask = np.ones((b, t), np.int64)
    mask[1, :3] = 0  # left padding
    pos = np.maximum(mask.cumsum(-1) - 1, 0)
    out, cache = tp2.forward(ids, attention_mask=mask, position_ids=pos, outputs=("logits", "hidden", "router_logits"))
    with torch.no_grad():
        r = ref.run(torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(mask))
    real = mask.astype(bool)
    assert rel_err(out["logits"][real], r.logits.numpy()[real]) < REL
    for i in range(ref.config.num_layers):
        assert rel_err(out[f"hidden.{i}"][real], r.hidden_states[i].numpy()[real]) < REL, f"hidden.{i}"
        assert rel_err(out[f"router_logits.{i}"], r.router_logits[i].numpy()) < REL, f"router_logits.{i}"
    for i, (k, v) in enumerate(r.present):  # the KV cache, assembled from the ranks' kv heads
        assert rel_err(cache.keys[i].numpy(), k.numpy()) < REL and rel_err(cache.values[i].numpy(), v.numpy()) < REL
    for step in range(3):  # decoding over the ranks' caches
        new = np.random.default_rng(2 + step).integers(3, 131, (b, 1))
        mask = np.concatenate([mask, np.ones((b, 1), np.int64)], axis=1)
        pos = pos[:, -1:] + 1
        out, cache = tp2.forward(new, cache, attention_mask=mask, position_ids=pos)
        ids = np.concatenate([ids, new], axis=1)
        with torch.no_grad():
            full = ref.run(torch.from_numpy(ids), torch.from_numpy(np.maximum(mask.cumsum(-1) - 1, 0)),
                           torch.from_numpy(mask)).logits[:, -1].numpy()
        assert rel_err(out["logits"][:, -1], full) < REL, f"decode step {step}"


def test_tp2_batched_generate_equals_single_prompts(tp2):
    prompts = [[5, 9, 17, 33], [7, 8, 100, 12, 13, 14, 60]]
    batch = tp2.generate(prompts, max_new_tokens=6)
    assert [c.token_ids for c in batch] == [tp2.generate(p, max_new_tokens=6).token_ids for p in prompts]


@pytest.fixture(scope="module")
def tiny_tp4(root):
    """The tiny preset (2 kv heads, the real v1 tokenizer) split 4 ways: kv heads replicated."""
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.export import export_checkpoint

    ckpt = init_checkpoint(get_preset("tiny"), root / "tiny", seed=4)
    export_checkpoint(ckpt, root / "onnx-tiny-tp4", max_seq=128, max_batch=2, tensor_parallel=4, debug_outputs=True)
    return ckpt, build_engine(root / "onnx-tiny-tp4", root / "engine-tiny-tp4", "ort")


def test_tp4_with_fewer_kv_heads_than_ranks_passes_parity_and_chats(tiny_tp4):
    from mixtral_trt.parity import run_parity

    ckpt, engine_dir = tiny_tp4
    ref = load_model(ckpt)
    engine = runtime.load(engine_dir)
    try:
        assert len(engine.runner.pids) == 4
        report = run_parity(engine, ref, prompts=[[5, 17, 300, 4000, 12], list(range(100, 121))], greedy_steps=4,
                            tokenizer=engine.tokenizer)
        assert report.passed, report
        reply = engine.chat([{"role": "user", "content": "Bonjour !"}], max_new_tokens=5)
        assert isinstance(reply, str)
        ids = np.random.default_rng(3).integers(3, 32000, (1, 9))
        err = rel_err(engine.logits(ids), ref(torch.from_numpy(ids)).detach().numpy())
        print(f"tiny tp4 (2 kv heads on 4 ranks) vs mixtral_ref: logits max rel err {err:.2e}")
        assert err < REL
    finally:
        engine.runner.close()


def test_tp2_top3_sliding_window_matches_the_reference(root):
    """Top-3 of 6 experts, a 5-token sliding window, vocab 211 (uneven split), decoding past the window."""
    from mixtral_trt.common.contract import GraphContract
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.shard.export import export_model_tensor_parallel

    model = random_model(SLIDING_TOP3, seed=5)
    out = root / "onnx-sliding-tp2"
    out.mkdir()
    export_model_tensor_parallel(model, out, GraphContract.for_config(SLIDING_TOP3, "fp32", 2, 64), 2)
    engine = runtime.load(build_engine(out, root / "engine-sliding-tp2", "ort"))
    try:
        prompt = [4, 8, 15, 16, 23, 42, 99, 7]
        got = engine.generate(prompt, max_new_tokens=8, ignore_eos=True).token_ids
        from mixtral_trt.mixtral_ref.generate import greedy_steps

        steps = greedy_steps(model, prompt)
        want = [next(steps)[0] for _ in range(len(got))]
        assert got == want
        ids = np.array([prompt + got])
        err = rel_err(engine.logits(ids), model(torch.from_numpy(ids)).detach().numpy())
        print(f"top-3 sliding-window tp2 vs mixtral_ref: logits max rel err {err:.2e}, greedy {got == want}")
        assert err < REL
    finally:
        engine.runner.close()


def test_tp2_int4_experts_pass_parity(root):
    """int4 experts (32 inputs per scale) split 2 ways: codes rebound per rank, judged by parity against the
    same quantization of the reference."""
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.export import export_checkpoint
    from mixtral_trt.parity import check_engine

    make_hf_model(seed=13, hidden_size=64, intermediate_size=64).save_pretrained(root / "hf-int4")
    onnx_dir = export_checkpoint(root / "hf-int4", root / "onnx-int4-tp2", max_seq=128, max_batch=2,
                                 quantize_experts="int4", quant_block=32, tensor_parallel=2)
    engine_dir = build_engine(onnx_dir, root / "engine-int4-tp2", "ort")
    report = check_engine(engine_dir, root / "hf-int4", greedy_steps=6)
    assert report.passed, report


def test_tp2_int8_dense_quantized_pass_parity(root):
    """int8 experts, attention and LM head (LinearQ: wo's inputs, 64 query features / 2 ranks, hold whole
    blocks of 32) split 2 ways: the LinearQ codes are rebound per rank; the 8-bit kernels' int8 activations
    are reproduced by parity's reference."""
    from mixtral_trt.common.contract import GraphContract
    from mixtral_trt.exporter.build import build_engine
    from mixtral_trt.exporter.export import export_checkpoint
    from mixtral_trt.parity import check_engine

    make_hf_model(seed=14, hidden_size=64, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16).save_pretrained(root / "hf-int8")
    onnx_dir = export_checkpoint(root / "hf-int8", root / "onnx-int8-tp2", max_seq=128, max_batch=2,
                                 quantize_experts="int8", tensor_parallel=2)
    assert GraphContract.load(onnx_dir).extra["quantization"]["dense"]
    report = check_engine(build_engine(onnx_dir, root / "engine-int8-tp2", "ort"), root / "hf-int8", greedy_steps=6)
    assert report.passed, report


# ---- failures: one line, never a hang ----------------------------------------------------------------------
def test_a_rank_dying_mid_call_fails_the_call_in_one_line(root, tp2, monkeypatch):
    monkeypatch.setenv("MIXTRAL_TRT_TP_FAULT", "1:2")  # rank 1 exits (code 17) at its 2nd call
    engine = runtime.load(root / "engine-tp2")
    ids = np.array([[5, 6, 7]])
    engine.logits(ids)
    start = time.monotonic()
    with pytest.raises(MixtralTrtError) as e:
        engine.logits(ids)
    print(f"rank dying mid-call: failed after {time.monotonic() - start:.2f} s: {e.value}")
    assert time.monotonic() - start < 15
    message = str(e.value)
    assert "\n" not in message and "rank 1" in message and "exited with code 17" in message, message
    with pytest.raises(MixtralTrtError, match="rank 1"):  # refused from then on
        engine.logits(ids)
    assert all(p.poll() is not None for p in engine.runner._procs)  # the survivors were stopped


def test_a_killed_or_hung_rank_fails_the_next_call(root, tp2, monkeypatch):
    monkeypatch.setenv("MIXTRAL_TRT_TP_TIMEOUT", "4")
    ids = np.array([[5, 6, 7]])
    engine = runtime.load(root / "engine-tp2")
    os.kill(engine.runner.pids[0], signal.SIGKILL)
    with pytest.raises(MixtralTrtError, match=r"rank 0 \(pid \d+\) exited with code -9") as e:
        engine.logits(ids)
    assert "\n" not in str(e.value)
    engine = runtime.load(root / "engine-tp2")
    os.kill(engine.runner.pids[1], signal.SIGSTOP)  # alive but silent: the timeouts end the call
    start = time.monotonic()
    try:
        with pytest.raises(MixtralTrtError, match="rank") as e:
            engine.logits(ids)
    finally:
        with contextlib.suppress(ProcessLookupError):  # stopped by the failed call already
            os.kill(engine.runner.pids[1], signal.SIGCONT)
        engine.runner.close()
    print(f"hung rank: {time.monotonic() - start:.1f} s, {e.value}")
    assert time.monotonic() - start < 4 + 15 and "\n" not in str(e.value), str(e.value)


def test_joining_ranks_started_by_torchrun(tp2, hf, root, tmp_path):
    """Under torchrun every process calls runtime.load: rank 0 gets the Engine, rank 1 serves it and exits."""
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from mixtral_trt import runtime\n"
        "engine = runtime.load(sys.argv[1])  # rank 1 never returns from here\n"
        "ids = np.load(sys.argv[2])\n"
        "out, cache = engine.forward(ids)\n"
        "np.save(sys.argv[3], out['logits'])\n"
        "np.save(sys.argv[4], cache.keys[1].numpy())\n"
        "print('tokens', engine.generate(ids[0].tolist(), max_new_tokens=5).token_ids)\n")
    ids = np.random.default_rng(5).integers(3, 131, (1, 8))
    np.save(tmp_path / "ids.npy", ids)
    # a generous collective timeout: this test is about joining, and a loaded machine may be slow to start a rank
    env = {**os.environ, "MIXTRAL_TRT_THREADS": "1", "MIXTRAL_TRT_TP_TIMEOUT": "300"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(root / "engine-tp2"), str(tmp_path / "ids.npy"),
                             str(tmp_path / "logits.npy"), str(tmp_path / "keys.npy")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    with torch.no_grad():
        want = hf[1](torch.from_numpy(ids)).logits.numpy()
    assert rel_err(np.load(tmp_path / "logits.npy"), want) < REL
    _, cache = tp2.forward(ids)  # the self-started engine's cache, assembled: the same
    assert rel_err(np.load(tmp_path / "keys.npy"), cache.keys[1].numpy()) < REL
    assert f"tokens {tp2.generate(ids[0].tolist(), max_new_tokens=5).token_ids}" in result.stdout
