"""The cpu_kernels library's ops (mixtral.cpu::MoE / MoEBF16 / MoEQ) on every ISA path this CPU runs, against
mixtral_ref's oracles (support/cpu_kernels.py), and their errors at session creation.

Tolerances, relative to max |reference| of the case: fp32 and bf16 1e-5 for every element (only float32
summation order differs; the amx path, for fp32 and bf16, and avx512bf16, for bf16, multiply bf16 parts: each
activation, and each float32 weight, split into hi + lo bf16 that stand for it to 2^-18 relative, the lo.lo
product dropped: still within 1e-5 of the float32 reference). int8 / int4: the op and the reference round the
same activations to int8, but their SwiGLU outputs can differ in the last bit, which now and then puts one value
on the other side of a rounding boundary: one such flip moves its token's outputs by one activation step times a
weight (< 5e-3 here), so the 99.9th percentile of the error is held to 1e-5 and the maximum to 5e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt.plugins import cpu_kernels
from support.cpu_kernels import (
    DTYPES,
    Case,
    cases_by_dtype,
    make_experts,
    moe_model,
    oracle,
    run_op,
    session,
    weight_as_graph_input,
)

CASES = {
    "decode": Case(T=1, H=64, I=96, E=8, k=2),  # 6 experts get no rows
    "odd-H": Case(T=5, H=96, I=160, E=8, k=2, seed=1),  # H not a multiple of 64
    "one-expert": Case(T=4, H=64, I=64, E=1, k=1, seed=2),
    "k=E": Case(T=6, H=64, I=96, E=4, k=4, seed=3),
    "prefill": Case(T=300, H=128, I=96, E=8, k=2, seed=4),
}
# T = 4096 rows on the fast paths (every ISA's float kernels; 8-32 s on the portable path is left out)
LONG = Case(T=4096, H=64, I=64, E=4, k=1, seed=9)
# float weights also take H and I that no SIMD width divides (tails); quantized ones need multiples of the block
FLOAT_ONLY = {
    "tails": Case(T=3, H=40, I=24, E=3, k=2, seed=5),
    # 16-row weight blocks and a last odd one (amx: tiles and the vector kernel's rows; 16+ tokens per expert)
    "odd-rows": Case(T=70, H=96, I=168, E=3, k=2, seed=8),
    # gate/up items of 48 rows (amx: a pair of 16-row blocks, then one), 17-33 tokens per expert (a pair of token
    # blocks, one partial); I not a multiple of 32 (amx: the down GEMM on the vector kernel)
    "wide": Case(T=50, H=64, I=1040, E=2, k=1, seed=10),
}


def _check(ex, got: np.ndarray, block: int = 32) -> None:
    want = oracle(ex, block)
    scale = max(1.0, float(np.abs(want).max()))
    err = np.abs(got - want) / scale
    figures = (f"{ex.dtype}: max error {err.max():.2e}, 99.9th percentile {np.quantile(err, 0.999):.2e} "
               f"(x max|ref| {scale:.2f})")
    assert got.shape == want.shape and np.isfinite(got).all(), figures
    if ex.dtype in ("fp32", "bf16"):
        assert err.max() <= 1e-5, figures
    else:
        assert np.quantile(err, 0.999) <= 1e-5 and err.max() <= 5e-3, figures


ISAS = ["amx", "avx512bf16", "avx512", "avx2", "portable"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("dtype", "case"), cases_by_dtype(CASES, FLOAT_ONLY))
def test_op_matches_reference(library, use_isa, isa, dtype, case):
    use_isa(isa)
    assert cpu_kernels.isa(library) == isa
    ex = make_experts({**CASES, **FLOAT_ONLY}[case], dtype)
    _check(ex, run_op(ex, library))


@pytest.mark.parametrize("isa", ["amx", "avx512bf16", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_long_prefill(library, isas, monkeypatch, isa, dtype):
    if isa not in isas:
        pytest.skip(f"this CPU does not run the {isa} path (it runs {', '.join(isas)})")
    monkeypatch.setenv(cpu_kernels.ISA_ENV, isa)
    ex = make_experts(LONG, dtype)
    _check(ex, run_op(ex, library))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_give_the_same_result(library, isas, monkeypatch, isa, dtype):
    if isa not in isas:
        pytest.skip(f"this CPU does not run the {isa} path (it runs {', '.join(isas)})")
    monkeypatch.setenv(cpu_kernels.ISA_ENV, isa)
    # ~9 tokens per expert: float on the vector kernels, int8 / int4 on amx tiles for the experts with 10+
    ex = make_experts(Case(T=37, H=64, I=192, E=8, k=2, seed=6), dtype)
    # ~45 tokens per expert (amx tiles for bf16); float: I = 200 = 12 x 16 + 8 rows
    ex_many = make_experts(Case(T=90, H=64, I=200 if dtype in ("fp32", "bf16") else 192, E=4, k=2, seed=6), dtype)
    for e in (ex, ex_many):
        one = run_op(e, library, threads=1)
        for threads in (2, 3, 4):
            np.testing.assert_array_equal(run_op(e, library, threads=threads), one, err_msg=f"{threads} threads")


def _idle_experts(case: Case):
    """int8 layer whose routing leaves experts idle: every token to experts 0 and 1 (tiles), tokens 0-4 to expert 2
    instead of 1 (5 tokens: the vector kernel in the same layer), experts 3.. none."""
    ex = make_experts(case, "int8")
    ex.logits[:, 0] += 8.0
    ex.logits[:, 1] += 6.0
    ex.logits[:5, 2] += 12.0
    return ex


# amx: the int8 / int4 GEMMs of 16+ tokens per expert on AMX-INT8 tiles (kernels_amx_int8.cc): token counts that
# no 16 divides, blocks of 64 and 128 inputs (64-input tiles, one or two per scale), idle experts
QUANT_TILES = {  # case, block
    "partial-token-blocks": (Case(T=53, H=96, I=160, E=3, k=2, seed=11), 32),  # ~35 tokens per expert
    "one-expert": (Case(T=37, H=64, I=96, E=1, k=1, seed=12), 32),
    "k=E": (Case(T=20, H=64, I=64, E=4, k=4, seed=13), 32),
    "blocks-of-64": (Case(T=40, H=128, I=192, E=2, k=1, seed=14), 64),
    "blocks-of-128": (Case(T=40, H=256, I=128, E=2, k=1, seed=15), 128),  # two 64-input tiles per scale
    "idle-experts": (Case(T=40, H=64, I=96, E=6, k=2, seed=16), 32),
}


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("case", QUANT_TILES)
def test_quantized_tiles_match_reference_for_any_thread_count(library, use_isa, dtype, case):
    use_isa("amx")
    shape, block = QUANT_TILES[case]
    ex = _idle_experts(shape) if case == "idle-experts" else make_experts(shape, dtype, block)
    if case == "idle-experts" and dtype == "int4":
        ex4 = make_experts(shape, "int4")
        ex4.logits = ex.logits
        ex = ex4
    one = run_op(ex, library, threads=1)
    _check(ex, one, block)
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(run_op(ex, library, threads=threads), one, err_msg=f"{threads} threads")


def test_bf16_split_paths_agree_with_the_widened_path(library, isas, monkeypatch):
    """avx512bf16 and amx (bf16 hi + lo activations) against avx512 (weights widened to float32): the same
    numbers to float32 summation order, far inside bf16 activation rounding (2^-9 ~ 2e-3)."""
    if "amx" not in isas and "avx512bf16" not in isas:
        pytest.skip(f"this CPU has no AVX512-BF16 (it runs {', '.join(isas)})")
    ex = make_experts(CASES["prefill"], "bf16")
    results = {}
    for isa in [i for i in ("amx", "avx512bf16", "avx512") if i in isas]:
        monkeypatch.setenv(cpu_kernels.ISA_ENV, isa)
        results[isa] = run_op(ex, library)
    scale = float(np.abs(results["avx512"]).max())
    for isa, got in results.items():
        err = float(np.abs(got - results["avx512"]).max()) / scale
        assert err <= 1e-5, f"{isa}: {err:.2e} relative to the widened path"


def test_isas_agree_on_quantized_results(library, isas, monkeypatch):
    """Integer dots are exact and every path sums the same lanes: the int8 results agree to float rounding."""
    ex = make_experts(Case(T=9, H=64, I=96, E=8, k=2, seed=7), "int8")
    results = {}
    for isa in isas:
        monkeypatch.setenv(cpu_kernels.ISA_ENV, isa)
        results[isa] = run_op(ex, library)
    for isa, got in results.items():
        np.testing.assert_allclose(got, results["portable"], rtol=0, atol=1e-5, err_msg=isa)


def test_unknown_isa_is_a_session_error(library, monkeypatch):
    monkeypatch.setenv(cpu_kernels.ISA_ENV, "sse9")
    message = _session_error(make_experts(CASES["decode"], "fp32"), library)
    assert "moe0" in message and "MIXTRAL_TRT_CPU_ISA=sse9: choose one of" in message, message


def _session_error(ex, library, **model_args) -> str:
    with pytest.raises(Exception) as info:  # noqa: B017 (ONNX Runtime's own exception types)
        session(moe_model(ex, **model_args), library)
    return str(info.value)


def test_wrong_weight_dtype_names_the_node(library):
    ex = make_experts(CASES["decode"], "fp32")
    from onnx import numpy_helper

    ex.initializers[0] = numpy_helper.from_array(ex.w13.astype(np.float16), "w13")
    message = _session_error(ex, library)
    assert "moe0" in message and "tensor(float16)" in message, message


def test_wrong_weight_shapes_name_the_node(library):
    from onnx import numpy_helper

    ex = make_experts(CASES["decode"], "fp32")
    ex.initializers[1] = numpy_helper.from_array(ex.w2[:, :-1], "w2")
    message = _session_error(ex, library)
    assert "moe0" in message and "disagree on H or I" in message, message


def test_wrong_scales_and_block_name_the_node(library):
    from onnx import numpy_helper

    ex = make_experts(CASES["decode"], "int8")
    ex.initializers[3] = numpy_helper.from_array(np.ones((8, 64, 2), np.float32), "s2")
    assert "moe0" in (m := _session_error(ex, library)) and "scales" in m, m
    ex = make_experts(CASES["decode"], "int4")
    ex.attributes["block_size"] = 16
    assert "moe0" in (m := _session_error(ex, library)) and "block_size = 16" in m, m


def test_k_out_of_range_names_the_node(library):
    ex = make_experts(CASES["k=E"], "fp32")
    ex.attributes["k"] = 5
    assert "moe0" in (m := _session_error(ex, library)) and "k = 5" in m, m


def test_wrong_activation_rank_is_an_error_naming_the_node(library):
    """Activations' shapes are symbolic at session creation: checked on every call, as ONNX Runtime's errors."""
    ex = make_experts(CASES["decode"], "fp32")
    sess = session(moe_model(ex, x_shape=("T", None, 1)), library)
    with pytest.raises(Exception, match="moe0.*want \\[T, 64\\]"):  # noqa: B017
        sess.run(None, {"x": ex.x[..., None], "router_logits": ex.logits})


def test_non_constant_weights_name_the_node(library):
    ex = make_experts(CASES["decode"], "fp32")
    model = moe_model(ex)
    weight_as_graph_input(model, 1)
    with pytest.raises(Exception, match="moe0.*w2 must be a constant initializer"):  # noqa: B017
        session(model, library)


def test_wrong_runtime_width_is_an_error_not_a_crash(library):
    ex = make_experts(CASES["decode"], "fp32")
    sess = session(moe_model(ex, x_shape=("T", "H")), library)
    with pytest.raises(Exception, match="moe0"):  # noqa: B017
        sess.run(None, {"x": np.zeros((1, 63), np.float32), "router_logits": ex.logits})


def test_zero_tokens(library):
    ex = make_experts(CASES["decode"], "int4")
    ex.x, ex.logits = ex.x[:0], ex.logits[:0]
    assert run_op(ex, library).shape == (0, 64)
