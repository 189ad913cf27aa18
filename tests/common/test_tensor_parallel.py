"""The tensor-parallel split (common/tensor_parallel.py): heads, expert rows and vocabulary rows per rank."""

from __future__ import annotations

import pytest

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.tensor_parallel import TensorParallel, check_world_size
from mixtral_trt.mixtral_ref import get_preset

CFG_8X22B = get_preset("mixtral-8x22b")  # 48 query heads, 8 kv heads


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_no_kv_head_is_stored_twice_when_ranks_do_not_exceed_kv_heads(n):
    tp = TensorParallel(n)
    kv = [tp.kv_heads(CFG_8X22B, r) for r in range(n)]
    assert sorted(h for heads in kv for h in heads) == list(range(8))  # each once
    r_per_kv = CFG_8X22B.num_heads // CFG_8X22B.num_kv_heads
    for rank in range(n):  # every query head of a rank uses one of the rank's kv heads
        assert {q // r_per_kv for q in tp.q_heads(CFG_8X22B, rank)} == set(kv[rank])
    assert sorted(q for r in range(n) for q in tp.q_heads(CFG_8X22B, r)) == list(range(48))


@pytest.mark.parametrize("n", [16, 48])
def test_kv_heads_are_replicated_when_ranks_exceed_them(n):
    tp = TensorParallel(n)
    kv = [tp.kv_heads(CFG_8X22B, r) for r in range(n)]
    assert all(len(heads) == 1 for heads in kv)
    assert [sum(heads == [h] for heads in kv) for h in range(8)] == [n // 8] * 8  # each on n/8 ranks
    r_per_kv = CFG_8X22B.num_heads // CFG_8X22B.num_kv_heads
    for rank in range(n):
        assert {q // r_per_kv for q in tp.q_heads(CFG_8X22B, rank)} == set(kv[rank])
    assert tp.kv_owner(CFG_8X22B, 5) == (5 * n // 8, 0)


@pytest.mark.parametrize("vocab, n", [(32000, 8), (211, 4), (5, 4)])
def test_vocabulary_rows_partition_the_vocabulary(vocab, n):
    cfg = get_preset("tiny").replace(vocab_size=vocab)
    tp = TensorParallel(n)
    ranges = [tp.vocab_range(cfg, r) for r in range(n)]
    assert ranges[0][0] == 0 and ranges[-1][1] == vocab
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))
    assert all(end - start <= tp.vocab_rows(cfg) for start, end in ranges)


def test_local_config_and_record_round_trip():
    tp = TensorParallel(4)
    local = tp.local_config(CFG_8X22B)
    assert (local.num_heads, local.num_kv_heads, local.intermediate_size) == (12, 2, 4096)
    assert TensorParallel.from_dict(tp.for_rank(3).to_dict()) == TensorParallel(4, 3)


@pytest.mark.parametrize("cfg, n, block, words", [
    (get_preset("tiny").replace(num_heads=8, num_kv_heads=4), 3, None, "4 kv heads do not split"),
    (get_preset("tiny").replace(num_heads=6, num_kv_heads=2), 4, None, "divide the 6 query heads"),
    (get_preset("tiny").replace(intermediate_size=90), 4, None, "intermediate size 90"),
    (get_preset("tiny"), 2, 32, "--quant-block 32"),  # 96 / 2 = 48 rows per rank, not a multiple of 32
    (get_preset("tiny"), 2, 0, "need --quant-block"),  # per-row scales of w2 would span ranks
    (get_preset("tiny"), 0, None, "at least 1"),
])
def test_world_sizes_that_do_not_split_are_one_line_errors(cfg: MixtralConfig, n, block, words):
    with pytest.raises(MixtralTrtError, match="--tensor-parallel") as e:
        check_world_size(cfg, n, block)
    assert words in str(e.value) and "\n" not in str(e.value)
