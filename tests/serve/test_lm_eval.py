"""lm-eval's `local-completions` model scores a local multiple-choice task (tests/serve/eval_task: the items in a
JSONL file, the task in YAML; nothing downloaded) against the running server, and gets the accuracy and the
per-item loglikelihoods (1e-3) of the same items scored directly on the reference model (mixtral_ref), tokenized
by our SentencePiece tokenizer (lm-eval tokenizes with the engine's HF tokenizer files). Skipped when lm-eval is
not installed (`pip install -e '.[eval-harness]'`). The same run by hand, against `mixtral-export serve ENGINE`:

    cd tests/serve/eval_task && OPENAI_API_KEY=... lm_eval --model local-completions --include_path . \\
        --tasks mixtral_trt_tiny_mc --model_args model=NAME,base_url=http://127.0.0.1:8000/v1/completions,\\
tokenizer=ENGINE,tokenizer_backend=huggingface,tokenized_requests=True,add_bos_token=True,max_length=256
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from support.logprobs import reference_logprobs
from support.serving import API_KEY, MODEL

TASK_DIR = Path(__file__).with_name("eval_task")
TASK = "mixtral_trt_tiny_mc"
TOL = 1e-3  # nats per item (a sum over the continuation's tokens), as the issue states

# checked without importing it: lm-eval imports `datasets`, which reads its cache folder from the environment once
pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="lm-eval is not installed (pip install -e '.[eval-harness]')")


def _reference_scores(model, tokenizer, docs: list[dict]) -> list[list[float]]:
    """Each choice's loglikelihood given its question, on the reference model."""
    scores = []
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        ctx = tokenizer.encode(context)
        row = []
        for choice in doc["choices"]:
            whole = tokenizer.encode(f"{context} {choice}")
            assert whole[: len(ctx)] == ctx
            lp = reference_logprobs(model, whole)
            row.append(float(sum(lp[t - 1, whole[t]] for t in range(len(ctx), len(whole)))))
        scores.append(row)
    return scores


def test_lm_eval_local_completions_scores_like_the_reference(server, tiny_reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(TASK_DIR)  # the task's data_files path is relative
    args = dict(model=MODEL, base_url=server.url + "/v1/completions", tokenizer=str(server.engine.path),
                tokenizer_backend="huggingface", tokenized_requests=True, add_bos_token=True, max_length=256,
                batch_size=4, num_concurrent=1, max_retries=1)
    out = lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=[TASK],
                                  task_manager=TaskManager(include_path=str(TASK_DIR)), log_samples=True)

    docs = [json.loads(line) for line in (TASK_DIR / "tiny_mc.jsonl").read_text().splitlines()]
    want = _reference_scores(tiny_reference, server.engine.tokenizer, docs)
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    assert len(samples) == len(docs)
    worst = 0.0
    for doc, sample, ref in zip(docs, samples, want, strict=True):
        got = [float(r[0][0]) for r in sample["resps"]]  # one (loglikelihood, is_greedy) per choice
        assert len(got) == len(doc["choices"])
        worst = max(worst, float(np.max(np.abs(np.array(got) - ref))))
        assert np.allclose(got, ref, atol=TOL, rtol=0), f"doc {sample['doc_id']}: lm-eval {got} vs reference {ref}"
    accuracy = float(np.mean([np.argmax(ref) == doc["answer"] for doc, ref in zip(docs, want, strict=True)]))
    got_acc = out["results"][TASK]["acc,none"]
    assert got_acc == pytest.approx(accuracy), (got_acc, accuracy)
    print(f"lm-eval accuracy {got_acc:.3f} == reference {accuracy:.3f}; largest loglikelihood difference {worst:.2e}")
