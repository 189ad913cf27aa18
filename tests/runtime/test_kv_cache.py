"""KVCache row operations (select, concat, trim): their bookkeeping on small arrays, and, on a real
engine, that rows joined into one padded batch or left alone after others leave score the next token
exactly as each row's own cache does (the oracle: each prompt run alone)."""

from __future__ import annotations

import numpy as np

from mixtral_trt.runtime.kv_cache import KVCache


def _cache(rows: list[list[int]], length: int) -> KVCache:
    """Per layer [B, 1, P, 1] arrays whose values name the row and slot (0 in padding); left padding."""
    keys, mask = np.zeros((len(rows), 1, length, 1), np.float32), np.zeros((len(rows), length), np.int64)
    for b, tokens in enumerate(rows):
        keys[b, 0, length - len(tokens) :, 0] = tokens
        mask[b, length - len(tokens) :] = 1
    return KVCache([keys, keys + 0.5], [-keys, -keys - 0.5], None if mask.all() else mask)


def test_row_bookkeeping():
    a = _cache([[1, 2, 3], [4, 5]], 3)
    b = _cache([[6, 7, 8, 9, 10]], 5)
    assert a.lengths.tolist() == [3, 2] and a.length == 3 and b.mask is None
    both = KVCache.concat([a, b])
    assert (both.batch, both.length) == (3, 5)
    assert both.attention_mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1]]
    assert both.keys[0][:, 0, :, 0].tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 4, 5], [6, 7, 8, 9, 10]]
    # new padding slots are zeros; the row's own (masked) padding slot and its values are kept as they were
    assert both.values[1][1, 0, :, 0].tolist() == [0, 0, -0.5, -4.5, -5.5]
    first_two = both.select([1, 0])  # the long row leaves: two padding slots in front of every row remain
    assert first_two.keys[0][:, 0, :, 0].tolist() == [[0, 0, 0, 4, 5], [0, 0, 1, 2, 3]]
    trimmed = first_two.trim()
    assert trimmed.length == 3 and trimmed.lengths.tolist() == [2, 3]
    assert trimmed.keys[0][:, 0, :, 0].tolist() == [[0, 4, 5], [1, 2, 3]]
    alone = both.select([2]).trim()
    assert alone.length == 5 and alone.mask is None  # no padding left: the mask is dropped
    assert both.select([0, 1, 2]) is both and alone.trim() is alone


def test_rows_joined_and_left_score_as_alone(tiny_engine):
    import onnxruntime as ort

    eng = tiny_engine
    prompts = [[1, 50, 60, 70, 80], [1, 900, 33, 12, 7, 401, 88, 5, 19], [1, 3000]]
    alone = [eng.forward(np.array([p])) for p in prompts]  # (outputs, cache) of each prompt alone
    assert all(isinstance(k, ort.OrtValue) for _, c in alone for k in c.keys)
    nxt = [int(out["logits"][0, -1].argmax()) for out, _ in alone]
    expected = [eng.forward(np.array([[t]]), cache)[0]["logits"][0, -1]
                for t, (_, cache) in zip(nxt, alone, strict=True)]
    scale = max(np.abs(e).max() for e in expected)

    joined = KVCache.concat([c for _, c in alone])
    assert joined.length == 9 and joined.lengths.tolist() == [5, 9, 2]
    out, cache = eng.forward(np.array([[t] for t in nxt]), joined)  # mask and positions from the cache
    for b in range(3):
        err = np.abs(out["logits"][b, -1] - expected[b]).max() / scale
        assert err < 1e-5, f"row {b} in a padded batch differs from its run alone by {err:.2e}"

    # the longest row leaves: the others keep scoring as alone, and the padding nobody needs goes
    rest = cache.select([0, 2]).trim()
    assert rest.length == 6 and rest.lengths.tolist() == [6, 3]
    steps = [int(expected[b].argmax()) for b in (0, 2)]
    out, _ = eng.forward(np.array([[t] for t in steps]), rest)
    for row, b in enumerate((0, 2)):
        ids = np.array([[*prompts[b], nxt[b], steps[row]]])
        whole = eng.logits(ids)[0, -1]
        err = np.abs(out["logits"][row, -1] - whole).max() / np.abs(whole).max()
        assert err < 1e-5, f"row {b} after the long row left differs from its full run by {err:.2e}"
