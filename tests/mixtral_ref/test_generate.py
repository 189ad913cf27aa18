"""Reference greedy `generate` (KV cache) against HF transformers' greedy `generate` and a cache-free loop."""

from __future__ import annotations

import torch

from mixtral_trt.mixtral_ref import load_model
from mixtral_trt.mixtral_ref.generate import generate, iter_generate


def test_generate_matches_hf_greedy(hf_checkpoint):
    ckpt = hf_checkpoint(seed=4, num_local_experts=6, num_experts_per_tok=2, sliding_window=6)
    model = load_model(ckpt.path)
    prompt = torch.randint(
        3, model.config.vocab_size, (9,), generator=torch.Generator().manual_seed(0)
    ).tolist()
    ours = generate(model, prompt, max_new_tokens=16)
    with torch.no_grad():
        hf = ckpt.model.generate(
            torch.tensor([prompt]),
            max_new_tokens=16,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.int64),
        )
    assert ours == hf[0, len(prompt) :].tolist()
    assert len(set(ours)) > 2, f"degenerate sequence {ours}: the test would not see a wrong cache"


def test_generate_matches_cache_free_argmax_and_stops_at_eos(hf_checkpoint):
    model = load_model(hf_checkpoint(seed=5).path)
    prompt = [1, 17, 42, 99, 5]
    ours = generate(model, prompt, max_new_tokens=10)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert ours == ids[len(prompt) :]
    eos = ours[3]
    stopped = generate(model, prompt, max_new_tokens=10, eos_id=eos)
    assert stopped == ours[: ours.index(eos) + 1]
    assert list(iter_generate(model, prompt, 4)) == ours[:4]
