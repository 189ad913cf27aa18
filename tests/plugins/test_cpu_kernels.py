"""The cpu_kernels library's ops (mixtral.cpu::MoE / MoEBF16 / MoEQ) on every ISA path this CPU runs, against
mixtral_ref's oracles (support/cpu_kernels.py), and their errors at session creation.

Tolerances, relative to max |reference| of the case: fp32 and bf16 1e-5 for every element (only float32
summation order differs). int8 / int4: the op and the reference round the same activations to int8, but their
SwiGLU outputs can differ in the last bit, which now and then puts one value on the other side of a rounding
boundary: one such flip moves its token's outputs by one activation step times a weight (< 5e-3 here), so the
99.9th percentile of the error is held to 1e-5 and the maximum to 5e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt.plugins import cpu_kernels
from support.cpu_kernels import DTYPES, Case, make_experts, moe_model, oracle, run_op, session

CASES = {
    "decode": Case(T=1, H=64, I=96, E=8, k=2),  # 6 experts get no rows
    "odd-H": Case(T=5, H=96, I=160, E=8, k=2, seed=1),  # H not a multiple of 64
    "one-expert": Case(T=4, H=64, I=64, E=1, k=1, seed=2),
    "k=E": Case(T=6, H=64, I=96, E=4, k=4, seed=3),
    "prefill": Case(T=300, H=128, I=96, E=8, k=2, seed=4),
}
# float weights also take H and I that no SIMD width divides (tails); quantized ones need multiples of the block
FLOAT_ONLY = {"tails": Case(T=3, H=40, I=24, E=3, k=2, seed=5)}


def _check(ex, got: np.ndarray) -> None:
    want = oracle(ex)
    scale = max(1.0, float(np.abs(want).max()))
    err = np.abs(got - want) / scale
    figures = (f"{ex.dtype}: max error {err.max():.2e}, 99.9th percentile {np.quantile(err, 0.999):.2e} "
               f"(x max|ref| {scale:.2f})")
    assert got.shape == want.shape and np.isfinite(got).all(), figures
    if ex.dtype in ("fp32", "bf16"):
        assert err.max() <= 1e-5, figures
    else:
        assert np.quantile(err, 0.999) <= 1e-5 and err.max() <= 5e-3, figures


@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [*CASES, *FLOAT_ONLY])
def test_op_matches_reference(library, use_isa, isa, dtype, case):
    if case in FLOAT_ONLY and dtype not in ("fp32", "bf16"):
        pytest.skip("quantized weights need H and I multiples of the block")
    use_isa(isa)
    assert cpu_kernels.isa(library) == isa
    ex = make_experts({**CASES, **FLOAT_ONLY}[case], dtype)
    _check(ex, run_op(ex, library))


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_give_the_same_result(library, dtype):
    ex = make_experts(Case(T=37, H=64, I=192, E=8, k=2, seed=6), dtype)
    one = run_op(ex, library, threads=1)
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(run_op(ex, library, threads=threads), one, err_msg=f"{threads} threads")


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
    from onnx import TensorProto, helper

    ex = make_experts(CASES["decode"], "fp32")
    model = moe_model(ex)
    w2 = model.graph.initializer.pop(1)
    model.graph.input.append(helper.make_tensor_value_info("w2", TensorProto.FLOAT, list(w2.dims)))
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
