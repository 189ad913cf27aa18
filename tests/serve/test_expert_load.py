"""`serve --expert-load`: the scheduler counts every token's experts from the engine's router outputs, and
/metrics shows them; oracle: the reference model's router over each request's fed tokens (torch.topk)."""

from __future__ import annotations

import pytest
import torch

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.mixtral_ref import load_model
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import Scheduler
from mixtral_trt.serve.metrics import Metrics

PROMPTS = ["Mixtral routes each token to", "Hi", "Le mélange d'experts"]


@torch.inference_mode()
def test_expert_tokens_equal_the_reference_router(tiny_engine, tiny_ckpt):
    eng, cfg = tiny_engine, tiny_engine.config
    sched = Scheduler(eng, expert_load=True)
    requests = [sched.submit(eng.tokenizer.encode(p), SamplingParams(max_new_tokens=6, ignore_eos=True),
                             tokenizer=eng.tokenizer) for p in PROMPTS]
    sched.run_until_idle()
    model, want = load_model(tiny_ckpt), torch.zeros(cfg.num_layers, cfg.num_experts, dtype=torch.int64)
    for r in requests:  # the prompt, then every generated token but the last is fed to the engine
        fed = torch.tensor([r.prompt + r.completion().token_ids[:-1]])
        for layer, logits in enumerate(model.run(fed).router_logits):  # [T, E]
            want[layer] += torch.bincount(logits.topk(cfg.top_k, -1).indices.reshape(-1), minlength=cfg.num_experts)
    got = sched.stats.expert_tokens
    print(got, want)
    assert got.tolist() == want.tolist()
    text = Metrics(sched).render().decode()
    for (layer, expert), count in [((0, 0), got[0, 0]), ((1, 7), got[1, 7])]:
        assert f'mixtral_trt_expert_tokens_total{{expert="{expert}",layer="{layer}"}} {float(count)}' in text, text


def test_off_by_default(tiny_engine):
    sched = Scheduler(tiny_engine)
    sched.submit(tiny_engine.tokenizer.encode("Hi"), SamplingParams(max_new_tokens=2), tokenizer=tiny_engine.tokenizer)
    sched.run_until_idle()
    assert sched.stats.expert_tokens is None and "expert_tokens" not in Metrics(sched).render().decode()


def test_an_engine_without_router_outputs_is_refused(tiny_engine, monkeypatch):
    names = type(tiny_engine.contract).names  # as exported without router outputs (the cache's names unchanged)
    monkeypatch.setattr(type(tiny_engine.contract), "names",
                        lambda self, role, *io: [] if role == "router_logits" else names(self, role, *io))
    with pytest.raises(MixtralTrtError, match="no router outputs to count expert load from"):
        Scheduler(tiny_engine, expert_load=True)
