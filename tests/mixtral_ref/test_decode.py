"""Prefill logits equal incremental decoding through the KV cache; left-padded batches equal single runs.

All fp32; tolerance: relative error below 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.mixtral_ref.writer import init_random

FP32_TOL = 1e-5


def _model(sliding_window):
    cfg = get_preset("tiny").replace(vocab_size=257, num_experts=6, top_k=2, sliding_window=sliding_window)
    model = init_random(cfg, seed=3, std=0.1)
    with torch.no_grad():  # non-unit norms so that every weight matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return model


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("chunks", [[1] * 11, [5, 1, 3, 2]])
def test_prefill_equals_incremental(window, chunks, rel_err):
    model = _model(window)
    ids = torch.randint(
        0, model.config.vocab_size, (2, sum(chunks)), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        full = model(ids)
        past, pieces, start = None, [], 0
        for n in chunks:
            out = model.run(ids[:, start : start + n], past=past)
            pieces.append(out.logits)
            past, start = out.present, start + n
    err = rel_err(torch.cat(pieces, dim=1), full)
    print(f"window={window} chunks={chunks}: prefill vs incremental relative error {err:.2e}")
    assert err < FP32_TOL, f"prefill vs incremental: relative error {err:.2e}"
    assert past[0][0].shape == (2, model.config.num_kv_heads, sum(chunks), model.config.head_dim)


@pytest.mark.parametrize("window", [None, 4])
def test_left_padded_batch_equals_single_runs(window, rel_err):
    model = _model(window)
    gen = torch.Generator().manual_seed(1)
    lengths, steps, pad_id = [9, 5, 7], 3, 0
    prompts = [torch.randint(1, model.config.vocab_size, (n,), generator=gen) for n in lengths]
    follow = torch.randint(1, model.config.vocab_size, (len(lengths), steps), generator=gen)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], mask[b, width - len(p) :] = p, 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model.run(ids, position_ids=positions, attention_mask=mask)
        batch_steps, past = [], out.present
        for s in range(steps):  # decode: one more real token per row
            mask = torch.cat([mask, torch.ones(len(lengths), 1, dtype=torch.int64)], dim=1)
            positions = positions[:, -1:] + 1
            step = model.run(follow[:, s : s + 1], position_ids=positions, attention_mask=mask, past=past)
            batch_steps.append(step.logits)
            past = step.present
        for b, p in enumerate(prompts):
            single = model(torch.cat([p, follow[b]])[None])[0]  # [T + steps, V]
            got = torch.cat([out.logits[b, width - len(p) :], *(x[b] for x in batch_steps)])
            err = rel_err(got, single)
            print(f"window={window} row {b} (length {len(p)}): relative error {err:.2e}")
            assert err < FP32_TOL, f"row {b}: padded batch vs single run, relative error {err:.2e}"
