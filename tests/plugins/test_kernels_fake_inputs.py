"""The kernels on the index data TensorRT's tactic timing feeds them (made up: random, zeros, out of range),
under Triton's interpreter: every buffer sits inside a guard region (NaN around float tensors, a sentinel
around integer outputs), so a store outside an output changes its guard and a load outside an input brings
NaN into a written row. Nothing outside may be touched: pairs outside [0, P), experts outside [0, E) and
num_padded beyond M_max are skipped or clamped (masked loads)."""

from __future__ import annotations

import math

import pytest
import torch

from mixtral_trt.plugins.moe_align.launch import run as align
from mixtral_trt.plugins.moe_gemm_down.launch import run as gemm_down
from mixtral_trt.plugins.moe_gemm_down_q.launch import run as gemm_down_q
from mixtral_trt.plugins.moe_gemm_swiglu.launch import run as gemm_swiglu
from mixtral_trt.plugins.moe_gemm_swiglu_q.launch import run as gemm_swiglu_q

T, K, E, H, INTER, BLOCK = 3, 2, 3, 32, 32, 16  # E 3: the align kernel's expert lanes (4) hold one past E
P, M_MAX = T * K, T * K + E * (BLOCK - 1)
NUM_BLOCKS = -(-M_MAX // BLOCK)
SENTINEL = 0x5EAD
BIG = 2**31 - 1


class Guarded:
    """A tensor in the middle of a larger buffer whose both ends are `fill`."""

    def __init__(self, shape, dtype, fill, guard: int, inside=None) -> None:
        n = math.prod(shape)
        self.n, self.guard = n, guard
        self.buf = torch.full((n + 2 * guard,), fill, dtype=dtype)
        self.view = self.buf[guard:guard + n].view(shape)
        if inside is not None:
            self.view.copy_(inside)

    def guards_intact(self) -> bool:
        ends = torch.cat([self.buf[:self.guard], self.buf[self.guard + self.n:]])
        return bool(torch.isnan(ends).all()) if ends.is_floating_point() else bool((ends == SENTINEL).all())


def index_cases() -> dict[str, tuple[list[int], list[int], int]]:
    """(sorted pairs [M_MAX], block experts [NUM_BLOCKS], num_padded) as TensorRT's timing might make them."""
    g = torch.Generator().manual_seed(0)
    rand = lambda n, lo, hi: torch.randint(lo, hi, (n,), generator=g).tolist()  # noqa: E731
    near = [P - 1, -1, P, 0, -P] * M_MAX
    return {
        "zeros": ([0] * M_MAX, [0] * NUM_BLOCKS, 0),
        "random": (rand(M_MAX, -2**31, BIG), rand(NUM_BLOCKS, -2**31, BIG), rand(1, -2**31, BIG)[0]),
        "random small": (rand(M_MAX, -2 * P, 2 * P), rand(NUM_BLOCKS, -E, 2 * E), rand(1, 0, 2 * M_MAX)[0]),
        "past the ends": (near[:M_MAX], [E, -1, 0, BIG, E - 1][:NUM_BLOCKS], BIG),
        "all valid, num_padded past M_max": ([p % P for p in range(M_MAX)], [b % E for b in range(NUM_BLOCKS)],
                                             M_MAX + BLOCK),
    }


def routing(case):
    """The index inputs, each inside a guard of pairs that would be valid (P - 1) if read."""
    pairs, blocks, padded = case
    return (Guarded((M_MAX,), torch.int32, P - 1, 64, torch.tensor(pairs, dtype=torch.int32)).view,
            Guarded((NUM_BLOCKS,), torch.int32, E - 1, 64, torch.tensor(blocks, dtype=torch.int32)).view,
            Guarded((1,), torch.int32, M_MAX, 64, torch.tensor([padded], dtype=torch.int32)).view)


def floats(shape, seed: int, guard: int) -> Guarded:
    g = torch.Generator().manual_seed(seed)
    return Guarded(shape, torch.float32, math.nan, guard, torch.randn(shape, generator=g) * 0.1)


def check(out: Guarded, written_rows: torch.Tensor, what: str) -> None:
    assert out.guards_intact(), f"{what}: a store outside the output"
    rows = out.view[written_rows]
    assert not torch.isnan(rows).any(), f"{what}: a load outside an input reached {int(torch.isnan(rows).sum())} values"


def quantized(bits: int, n: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    codes = Guarded((E, n, k * bits // 8), torch.uint8, 0, n * k, torch.randint(0, 256, (E, n, k * bits // 8),
                                                                                  generator=g, dtype=torch.uint8))
    scales = floats((E, n, 1), seed + 1, n * 4)
    return codes.view, scales.view


@pytest.mark.parametrize("case", list(index_cases()))
def test_swiglu_gemms_touch_nothing_outside(case):
    sorted_pairs, block_experts, num_padded = routing(index_cases()[case])
    x, w13 = floats((T, H), 1, 2 * T * H), floats((E, 2 * INTER, H), 2, 2 * INTER * H)
    written = torch.arange(M_MAX)
    written = written[(written < min(int(num_padded), M_MAX))]
    for name, run in (("float", lambda out: gemm_swiglu(x.view, sorted_pairs, block_experts, num_padded, w13.view,
                                                        K, BLOCK, out=out)),
                      ("int8", lambda out: gemm_swiglu_q(x.view, sorted_pairs, block_experts, num_padded,
                                                         *quantized(8, 2 * INTER, H, 3), K, BLOCK, 8, 0, out=out))):
        out = Guarded((M_MAX, INTER), torch.float32, math.nan, 4 * INTER)
        out.view.fill_(0.0)  # rows the kernel skips stay 0 here (TensorRT leaves them unwritten)
        run(out.view)
        check(out, written, f"MoEGemmSwiGLU {name}, {case}")


@pytest.mark.parametrize("case", list(index_cases()))
def test_down_gemms_touch_nothing_outside(case):
    sorted_pairs, block_experts, num_padded = routing(index_cases()[case])
    inter, w2 = floats((M_MAX, INTER), 4, 2 * INTER), floats((E, H, INTER), 5, 2 * H * INTER)
    weights = floats((T, K), 6, 8)
    for name, run in (("float", lambda out: gemm_down(inter.view, sorted_pairs, block_experts, num_padded,
                                                      weights.view, w2.view, K, BLOCK, out=out)),
                      ("int4", lambda out: gemm_down_q(inter.view, sorted_pairs, block_experts, num_padded,
                                                       weights.view, *quantized(4, H, INTER, 7), K, BLOCK, 4, 0,
                                                       out=out))):
        out = Guarded((P, H), torch.float32, math.nan, 4 * H)
        out.view.fill_(0.0)
        run(out.view)
        check(out, torch.arange(P), f"MoEGemmDown {name}, {case}")


@pytest.mark.parametrize("experts", [[0] * P, [E] * P, [-1, E, BIG, -BIG, 1, E + 1], [E, E, E, 0, 1, 2]])
def test_align_touches_nothing_outside_on_expert_ids_out_of_range(experts):
    outs = [Guarded((n,), torch.int32, SENTINEL, 64) for n in (M_MAX, NUM_BLOCKS, 1)]
    sorted_pairs, block_experts, num_padded = align(torch.tensor(experts, dtype=torch.int32).view(T, K), E, BLOCK,
                                                    out=tuple(o.view for o in outs))
    assert all(o.guards_intact() for o in outs), f"a store outside the outputs for experts {experts}"
    in_range = [p for p, e in enumerate(experts) if 0 <= e < E]
    assert 0 <= int(num_padded) <= M_MAX and sorted(p for p in sorted_pairs.tolist() if p < P) == in_range
    assert all(-1 <= b < E for b in block_experts.tolist())
