"""Each kernel (Triton interpreter) against its own reference and against mixtral_ref's dense oracle, in
fp32 and fp16 (bf16 through fp32 copies: the interpreter's bf16 tl.dot is wrong), with edge cases."""

from __future__ import annotations

import pytest
import torch

from mixtral_trt.mixtral_ref.moe import experts_reference, router_reference
from mixtral_trt.plugins.moe_align.launch import run as align
from mixtral_trt.plugins.moe_align.reference import moe_align_reference
from mixtral_trt.plugins.moe_gemm_down.launch import run as gemm_down
from mixtral_trt.plugins.moe_gemm_down.reference import moe_gemm_down_reference
from mixtral_trt.plugins.moe_gemm_swiglu.launch import run as gemm_swiglu
from mixtral_trt.plugins.moe_gemm_swiglu.reference import moe_gemm_swiglu_reference
from mixtral_trt.plugins.moe_router.launch import run as router
from mixtral_trt.plugins.moe_router.reference import moe_router_reference
from mixtral_trt.plugins.pipeline import sparse_experts
from mixtral_trt.plugins.tiles import ALIGN_BLOCK, CPU_TACTIC, TACTICS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# relative error (max |Δ| / max |ref|) of the expert output against the float32 dense oracle
REL_TOL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 2e-2}


def routing(t: int, e: int, k: int, mode: str = "random", seed: int = 0) -> torch.Tensor:
    """Router logits [T, E]; mode "one_expert" sends every token to expert e-1 first (and e-2 next),
    "skip" leaves the upper half of the experts without any token."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(t, e, generator=g)
    if mode == "one_expert":
        logits[:, -1] += 30
        logits[:, -2] += 20
    elif mode == "skip" and e >= 2:
        logits[:, e // 2 :] -= 50
    return logits


CASES = [  # (T, E, k, H, I, mode)
    (1, 8, 2, 64, 96, "random"),  # decode
    (8, 8, 2, 64, 96, "random"),
    (37, 8, 2, 40, 52, "random"),  # T not a multiple of the block, odd H / I
    (24, 8, 2, 64, 96, "one_expert"),  # every token on the same experts
    (20, 8, 2, 64, 96, "skip"),  # experts without tokens
    (13, 6, 3, 48, 80, "random"),  # top-3 of 6
    (9, 4, 4, 32, 48, "random"),  # k = E
    (11, 16, 1, 32, 48, "random"),  # E = 16, k = 1
    (5, 1, 1, 32, 40, "random"),  # E = 1
]


@pytest.mark.parametrize(("t", "e", "k", "h", "i", "mode"), CASES)
def test_router_matches_references(t, e, k, h, i, mode):
    logits = routing(t, e, k, mode)
    for dtype in DTYPES.values():
        weights, experts = router(logits.to(dtype), k)
        ref_w, ref_e = moe_router_reference(logits.to(dtype), k)
        oracle_w, oracle_e = router_reference(logits.to(dtype), k)
        assert torch.equal(experts, ref_e) and torch.equal(experts, oracle_e), f"{dtype} T={t} E={e} k={k}"
        err = (weights - oracle_w).abs().max().item()
        assert err < 1e-6, f"{dtype}: routing weights differ by {err:.2e}"


def test_router_ties_go_to_the_lower_expert():
    weights, experts = router(torch.zeros(3, 8), 3)
    assert experts.tolist() == [[0, 1, 2]] * 3 and torch.allclose(weights, torch.full((3, 3), 1 / 3))


@pytest.mark.parametrize(("t", "e", "k", "h", "i", "mode"), CASES)
@pytest.mark.parametrize("block", [16, ALIGN_BLOCK])
def test_align_matches_reference_and_invariants(t, e, k, h, i, mode, block):
    _, experts = router(routing(t, e, k, mode), k)
    sorted_pairs, block_experts, num_padded = align(experts, e, block)
    ref = moe_align_reference(experts, e, block)
    assert all(torch.equal(a, b) for a, b in zip((sorted_pairs, block_experts, num_padded), ref, strict=True))
    p, total = t * k, int(num_padded[0])
    m_max = p + e * (block - 1)
    assert sorted_pairs.numel() == m_max and total <= m_max and total % block == 0
    real = sorted_pairs[sorted_pairs < p]
    assert torch.equal(torch.sort(real).values, torch.arange(p, dtype=torch.int32)), "every pair exactly once"
    assert (sorted_pairs[total:] == p).all(), "rows past the padded total hold the sentinel"
    flat = experts.reshape(-1)
    for b in range(block_experts.numel()):
        rows = sorted_pairs[b * block : (b + 1) * block]
        rows = rows[rows < p]
        if b * block >= total:
            assert block_experts[b] == -1
        elif rows.numel():
            assert (flat[rows.long()] == block_experts[b]).all(), f"block {b} mixes experts"


def _weights(e: int, h: int, i: int, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (0.2 * torch.randn(e, 2 * i, h, generator=g)).to(dtype), (0.2 * torch.randn(e, h, i, generator=g)).to(dtype)


@pytest.mark.parametrize(("t", "e", "k", "h", "i", "mode"), CASES)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_grouped_gemms_match_references(t, e, k, h, i, mode, dtype):
    dt = DTYPES[dtype]
    x = torch.randn(t, h, generator=torch.Generator().manual_seed(2)).to(dt)
    w13, w2 = _weights(e, h, i, dt)
    weights, experts = router(routing(t, e, k, mode).to(dt), k)
    routing_ = align(experts, e, ALIGN_BLOCK)
    inter = gemm_swiglu(x, *routing_, w13, k, ALIGN_BLOCK)
    ref_inter = moe_gemm_swiglu_reference(x, *routing_, w13, k, ALIGN_BLOCK)
    rows = torch.nonzero(routing_[0] < t * k)[:, 0]  # rows with a real pair (padding rows are unwritten)
    scale = ref_inter[rows].float().abs().max().item()
    err = (inter[rows].float() - ref_inter[rows].float()).abs().max().item() / scale
    assert err < REL_TOL[dtype], f"SwiGLU GEMM {dtype} T={t} E={e} k={k}: {err:.2e}"
    y_pairs = gemm_down(inter, *routing_, weights, w2, k, ALIGN_BLOCK)
    ref_pairs = moe_gemm_down_reference(inter, *routing_, weights, w2, k, ALIGN_BLOCK)
    err = ((y_pairs - ref_pairs).abs().max() / ref_pairs.abs().max()).item()
    assert err < REL_TOL[dtype], f"down GEMM {dtype} T={t} E={e} k={k}: {err:.2e}"


@pytest.mark.parametrize(("t", "e", "k", "h", "i", "mode"), CASES)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_pipeline_matches_dense_oracle(t, e, k, h, i, mode, dtype):
    """router -> align -> SwiGLU GEMM -> down GEMM -> sum over k equals mixtral_ref's dense experts."""
    dt = DTYPES[dtype]
    x = torch.randn(t, h, generator=torch.Generator().manual_seed(3)).to(dt)
    w13, w2 = _weights(e, h, i, dt, seed=4)
    weights, experts = router(routing(t, e, k, mode).to(dt), k)
    y = sparse_experts(x, experts, weights, w13, w2)
    ref = experts_reference(x.float(), experts, weights, w13.float(), w2.float())
    err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
    assert y.dtype == dt and y.shape == (t, h)
    assert err < REL_TOL[dtype], f"pipeline {dtype} T={t} E={e} k={k} ({mode}): relative error {err:.2e}"


@pytest.mark.parametrize("tactic", list(TACTICS))
def test_every_tactic_gives_the_same_result(tactic):
    t, e, k, h, i = 70, 8, 2, 64, 96
    x = torch.randn(t, h)
    w13, w2 = _weights(e, h, i, torch.float32)
    weights, experts = router(routing(t, e, k), k)
    y = sparse_experts(x, experts, weights, w13, w2, tactic=tactic)
    ref = experts_reference(x, experts, weights, w13, w2)
    err = ((y - ref).abs().max() / ref.abs().max()).item()
    assert err < REL_TOL["fp32"], f"tactic {tactic} ({TACTICS[tactic]}): {err:.2e}"


QUANT = [(8, 0), (8, 16), (4, 0), (4, 32)]


@pytest.mark.parametrize(("bits", "quant_block"), QUANT)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_quantized_gemms_match_references(bits, quant_block, dtype):
    """MoEGemmSwiGLUQ / MoEGemmDownQ (weights dequantized in the kernel) against their references and the
    whole quantized pipeline against the dense oracle on the dequantized weights."""
    from mixtral_trt.common.quant import QuantScheme
    from mixtral_trt.plugins.moe_gemm_down_q.launch import run as gemm_down_q
    from mixtral_trt.plugins.moe_gemm_down_q.reference import moe_gemm_down_q_reference
    from mixtral_trt.plugins.moe_gemm_swiglu_q.launch import run as gemm_swiglu_q
    from mixtral_trt.plugins.moe_gemm_swiglu_q.reference import moe_gemm_swiglu_q_reference
    from mixtral_trt.plugins.pipeline import sparse_experts_q

    dt, t, e, k, h, i = DTYPES[dtype], 21, 8, 2, 64, 96
    scheme = QuantScheme(bits, quant_block)
    w13, w2 = _weights(e, h, i, torch.float32, seed=5)
    c13, s13 = (torch.from_numpy(a) for a in scheme.quantize(w13.numpy()))
    c2, s2 = (torch.from_numpy(a) for a in scheme.quantize(w2.numpy()))
    s13, s2 = s13.to(dt), s2.to(dt)
    x = torch.randn(t, h, generator=torch.Generator().manual_seed(6)).to(dt)
    weights, experts = router(routing(t, e, k, seed=7), k)
    routing_ = align(experts, e, ALIGN_BLOCK)
    rows = torch.nonzero(routing_[0] < t * k)[:, 0]
    inter = gemm_swiglu_q(x, *routing_, c13, s13, k, ALIGN_BLOCK, bits, quant_block)
    ref = moe_gemm_swiglu_q_reference(x, *routing_, c13, s13, k, ALIGN_BLOCK, bits, quant_block)
    err = ((inter[rows].float() - ref[rows].float()).abs().max() / ref[rows].float().abs().max()).item()
    assert err < REL_TOL[dtype], f"SwiGLU GEMM int{bits}/{quant_block} {dtype}: {err:.2e}"
    y_pairs = gemm_down_q(inter, *routing_, weights, c2, s2, k, ALIGN_BLOCK, bits, quant_block)
    ref_pairs = moe_gemm_down_q_reference(inter, *routing_, weights, c2, s2, k, ALIGN_BLOCK, bits, quant_block)
    err = ((y_pairs - ref_pairs).abs().max() / ref_pairs.abs().max()).item()
    assert err < REL_TOL[dtype], f"down GEMM int{bits}/{quant_block} {dtype}: {err:.2e}"
    y = sparse_experts_q(x, experts, weights, c13, s13, c2, s2, bits, quant_block)
    d13 = torch.from_numpy(scheme.dequantize(c13.numpy(), s13.float().numpy())).to(dt).float()
    d2 = torch.from_numpy(scheme.dequantize(c2.numpy(), s2.float().numpy())).to(dt).float()
    oracle = experts_reference(x.float(), experts, weights, d13, d2)
    err = ((y.float() - oracle).abs().max() / oracle.abs().max()).item()
    assert err < REL_TOL[dtype], f"quantized pipeline int{bits}/{quant_block} {dtype}: {err:.2e}"


ZERO_POINTS = [(4, 16, False), (4, 32, True), (8, 16, True)]  # (bits, quant_block, act-order)


@pytest.mark.parametrize(("bits", "quant_block", "ordered"), ZERO_POINTS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_zero_point_gemms_match_references(bits, quant_block, ordered, dtype):
    """MoEGemmSwiGLUQZ / MoEGemmDownQZ (a checkpoint's codes with a stored zero point per group, and act-order: each
    expert's w13 columns in its own input order) against their references, and the pipeline against the dense oracle
    on the format's own dequantization (QuantScheme.dequantize with zeros, columns put back in input order). Codes
    and zero points span the whole unsigned range (0 included), G odd for the down rows (a padded 4-bit zero byte)."""
    check_zero_points(bits, quant_block, ordered, dtype, CPU_TACTIC)


@pytest.mark.parametrize(("dtype", "tactic"), [("fp16", 2), ("fp32", 3)])
def test_zero_point_tiles_match_references(dtype, tactic):
    """The tiles that differ with zero points (tiles.ZEROS_TILES: 8 warps at tactic 2, half the N width of fp32's
    tactic 3) give the same results as the references."""
    check_zero_points(4, 32, True, dtype, tactic)


def check_zero_points(bits: int, quant_block: int, ordered: bool, dtype: str, tactic: int) -> None:
    from mixtral_trt.common.quant import QuantScheme
    from mixtral_trt.plugins.moe_gemm_down_qz.launch import run as gemm_down_qz
    from mixtral_trt.plugins.moe_gemm_down_qz.reference import moe_gemm_down_qz_reference
    from mixtral_trt.plugins.moe_gemm_swiglu_qz.launch import run as gemm_swiglu_qz
    from mixtral_trt.plugins.moe_gemm_swiglu_qz.reference import moe_gemm_swiglu_qz_reference

    dt, t, e, k, h, i = DTYPES[dtype], 21, 8, 2, 64, 96 if quant_block == 32 else 80
    scheme = QuantScheme(bits, quant_block)
    g = torch.Generator().manual_seed(11)

    def stored(n: int, kk: int):  # codes, scales, zero points as a checkpoint stores them
        codes = torch.randint(0, 1 << bits, (e, n, kk), generator=g, dtype=torch.uint8)
        zeros = torch.randint(0, 1 << bits, (e, n, kk // quant_block), generator=g, dtype=torch.uint8)
        scales = ((0.02 + 0.03 * torch.rand(e, n, kk // quant_block, generator=g)) * 16 / (1 << bits)).to(dt)
        return (torch.from_numpy(scheme.pack(codes.numpy())), scales,
                torch.from_numpy(scheme.pack_zeros(zeros.numpy())))

    c13, s13, z13 = stored(2 * i, h)
    c2, s2, z2 = stored(h, i)
    order = torch.stack([torch.randperm(h, generator=g) for _ in range(e)]).to(torch.int32) if ordered \
        else torch.zeros(1, 1, dtype=torch.int32)
    x = torch.randn(t, h, generator=torch.Generator().manual_seed(6)).to(dt)
    weights, experts = router(routing(t, e, k, seed=7), k)
    routing_ = align(experts, e, ALIGN_BLOCK)
    rows = torch.nonzero(routing_[0] < t * k)[:, 0]
    attrs = (k, ALIGN_BLOCK, bits, quant_block)
    inter = gemm_swiglu_qz(x, *routing_, c13, s13, z13, order, *attrs, int(ordered), tactic=tactic)
    ref = moe_gemm_swiglu_qz_reference(x, *routing_, c13, s13, z13, order, *attrs, int(ordered))
    err = ((inter[rows].float() - ref[rows].float()).abs().max() / ref[rows].float().abs().max()).item()
    assert err < REL_TOL[dtype], \
        f"SwiGLU GEMM int{bits}/{quant_block} zeros ordered={ordered} {dtype} tactic {tactic}: {err:.2e}"
    y_pairs = gemm_down_qz(inter, *routing_, weights, c2, s2, z2, *attrs, tactic=tactic)
    ref_pairs = moe_gemm_down_qz_reference(inter, *routing_, weights, c2, s2, z2, *attrs)
    err = ((y_pairs - ref_pairs).abs().max() / ref_pairs.abs().max()).item()
    assert err < REL_TOL[dtype], f"down GEMM int{bits}/{quant_block} zeros {dtype} tactic {tactic}: {err:.2e}"
    y = y_pairs.view(t, k, -1).sum(dim=1).to(dt)
    d13 = torch.from_numpy(scheme.dequantize(c13.numpy(), s13.float().numpy(), z13.numpy())).to(dt).float()
    if ordered:  # column j of expert e is input order[e, j]
        d13 = torch.zeros_like(d13).scatter_(2, order.long()[:, None, :].expand_as(d13), d13)
    d2 = torch.from_numpy(scheme.dequantize(c2.numpy(), s2.float().numpy(), z2.numpy())).to(dt).float()
    oracle = experts_reference(x.float(), experts, weights, d13, d2)
    err = ((y.float() - oracle).abs().max() / oracle.abs().max()).item()
    assert err < REL_TOL[dtype], f"zero-point pipeline int{bits}/{quant_block} ordered={ordered} {dtype}: {err:.2e}"
