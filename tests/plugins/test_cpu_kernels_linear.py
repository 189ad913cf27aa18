"""The cpu_kernels library's linear ops (mixtral.cpu::Linear / LinearBF16 / LinearQ) on every ISA path this CPU
runs, against x Wᵀ in float64 (support/cpu_kernels.py's linear_oracle; int8 / int4: the int8-activation
reference, x rounded per block as mixtral_ref.quantized does), and their errors naming the node.

Tolerances, relative to max |reference| of the case, every element: fp32 and bf16 1e-5 (float32 summation order
only); int8 / int4 1e-5 (the op and the reference round the same float32 x to the same int8 codes; the integer
dots are exact, only the float32 sum of the blocks' scaled partial sums differs).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mixtral_trt.plugins import cpu_kernels
from support.cpu_kernels import (
    DTYPES,
    assert_close_to_max,
    cases_by_dtype,
    linear_model,
    linear_oracle,
    make_linear,
    run_linear,
    session,
    weight_as_graph_input,
)

# x shape, N
CASES = {
    "decode": ((1, 1, 128), 96),  # [batch, seq, K], as the graphs' projections
    "N=1": ((3, 64), 1),
    "odd-K": ((5, 96), 50),  # K not a multiple of 64 (quantized: of the block), N not of any tile
    "rows": ((2, 70, 64), 40),  # 140 rows: two row blocks and a remainder (N = 40: 2.5 blocks of 16 weight rows)
    "1-D": ((64,), 17),
    # one row over ~3-7 chunks of weight rows whose last chunk leaves the kernels' last stream of rows short (the
    # vector kernels read a pass's rows from separate runs of the chunk: rows past its end computed, not written)
    "decode-chunks": ((1, 128), 1001),
}
FLOAT_ONLY = {"tails": ((3, 40), 24)}  # K that no SIMD width divides: float weights only


def _check(lin, got: np.ndarray) -> None:
    assert_close_to_max(got, linear_oracle(lin), f"{lin.dtype} x {lin.x.shape} N={lin.w.shape[0]}")


# amx: row blocks of 16+ rows on AMX tiles (bf16 for float weights, int8 for LinearQ), padded past N; avx512bf16:
# LinearBF16 on vdpbf16ps over split activations
@pytest.mark.parametrize("isa", ["amx", "avx512bf16", "avx512", "avx2", "portable"])
@pytest.mark.parametrize(("dtype", "case"), cases_by_dtype(CASES, FLOAT_ONLY))
def test_linear_matches_reference(library, use_isa, isa, dtype, case):
    use_isa(isa)
    assert cpu_kernels.isa(library) == isa
    shape, n = {**CASES, **FLOAT_ONLY}[case]
    lin = make_linear(shape, n, dtype, seed=len(case))
    _check(lin, run_linear(lin, library))


@pytest.mark.parametrize("rows", [4, 40])  # 40: the amx path's 64-input tiles
@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_quantized_blocks_of_64(library, dtype, rows):
    lin = make_linear((rows, 192), 33, dtype, block=64, seed=9)
    _check(lin, run_linear(lin, library))


# avx512 paths by row count (kernels_avx512.cc): 1-2 rows 2 x 4 tiles, 3-15 4 x 4 tiles (activations prepared once
# per call), QUAD_MIN+ rows the quad tiles (gemm_quads: 16 weight rows per vector, 8 activation rows per tile).
# Every path computes a row's outputs the same way whichever rows share its call, so each row count equals, bit for
# bit, the same rows of a larger call on the same path. K 96 and 160: odd block counts (the 2 x 4 and 4 x 4 tiles'
# half pairs); N 13 and 40: a last group of 13 / 8 weight rows; blocks of 64: two 32-input steps per scale; 40 rows:
# 5 quad tiles, 39: a last tile of 7.
QUAD_MIN = 16


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize(("k", "n", "block"), [(96, 13, 32), (160, 40, 32), (192, 13, 64)])
def test_quantized_row_counts_match_reference_and_their_path(library, use_isa, dtype, k, n, block):
    use_isa("avx512")
    lin = make_linear((40, k), n, dtype, block=block, seed=k + n)
    quads = run_linear(lin, library, threads=1)
    _check(lin, quads)
    tiles = run_linear(dataclasses.replace(lin, x=lin.x[:QUAD_MIN - 1]), library, threads=1)
    for rows in sorted({1, 2, 3, 5, 8, 16, 17, QUAD_MIN - 1, QUAD_MIN, QUAD_MIN + 5, 39}):
        part = dataclasses.replace(lin, x=lin.x[:rows])
        got = run_linear(part, library, threads=1)
        _check(part, got)
        same, path = (quads, "quad tiles") if rows >= QUAD_MIN else (tiles, "4 x 4 tiles")
        np.testing.assert_array_equal(got, same[:rows], err_msg=f"{rows} rows against the same rows on the {path}")
        for threads in (2, 3, 4):
            np.testing.assert_array_equal(run_linear(part, library, threads=threads), got,
                                          err_msg=f"{rows} rows, {threads} threads")


def test_prefill_4096_rows(library):
    lin = make_linear((4096, 64), 48, "int4", seed=10)
    _check(lin, run_linear(lin, library))


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_give_the_same_result(library, dtype):
    lin = make_linear((70, 128), 200, dtype, seed=11)  # 2 row blocks x 4 chunks of weight rows
    one = run_linear(lin, library, threads=1)
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(run_linear(lin, library, threads=threads), one, err_msg=f"{threads} threads")
    for n in (1000, 1001):  # one row: the weight rows in chunks (1001: a short last stream in the last chunk)
        decode = make_linear((1, 128), n, dtype, seed=12)
        one = run_linear(decode, library, threads=1)
        for threads in (2, 3, 4):
            np.testing.assert_array_equal(run_linear(decode, library, threads=threads), one,
                                          err_msg=f"N={n}, {threads} threads")


def test_zero_rows(library):
    lin = make_linear((0, 64), 8, "int8")
    assert run_linear(lin, library).shape == (0, 8)
    lin = make_linear((2, 0, 64), 8, "fp32")
    assert run_linear(lin, library).shape == (2, 0, 8)


def _session_error(lin, library, **model_args) -> str:
    with pytest.raises(Exception) as info:  # noqa: B017 (ONNX Runtime's own exception types)
        session(linear_model(lin, **model_args), library)
    return str(info.value)


def test_wrong_weight_dtype_names_the_node(library):
    from onnx import numpy_helper

    lin = make_linear((1, 64), 8, "fp32")
    lin.initializers[0] = numpy_helper.from_array(lin.w.astype(np.float16), "w")
    message = _session_error(lin, library)
    assert "linear0" in message and "tensor(float16)" in message, message


def test_wrong_weight_shape_names_the_node(library):
    from onnx import numpy_helper

    lin = make_linear((1, 64), 8, "bf16")
    lin.initializers[0] = numpy_helper.from_array(np.zeros((8, 4, 16), np.float32).astype(np.uint16), "w")
    lin.initializers[0].data_type = 16  # bfloat16, 3-D
    message = _session_error(lin, library)
    assert "linear0" in message and "want [N, K]" in message, message


def test_wrong_scales_and_block_name_the_node(library):
    from onnx import numpy_helper

    lin = make_linear((1, 64), 8, "int8")
    lin.initializers[1] = numpy_helper.from_array(np.ones((8, 3), np.float32), "scales")
    assert "linear0" in (m := _session_error(lin, library)) and "scales [8, 3]: want [8, 2]" in m, m
    lin = make_linear((1, 96), 8, "int4")
    lin.attributes["block_size"] = 64
    assert "linear0" in (m := _session_error(lin, library)) and "does not divide K = 96" in m, m
    lin.attributes.update(block_size=32, bits=3)
    assert "linear0" in (m := _session_error(lin, library)) and "bits = 3" in m, m


def test_non_constant_weight_names_the_node(library):
    lin = make_linear((1, 64), 8, "fp32")
    model = linear_model(lin)
    weight_as_graph_input(model, 0)
    with pytest.raises(Exception, match="linear0.*w must be a constant initializer"):  # noqa: B017
        session(model, library)


def test_wrong_activation_width_is_an_error_naming_the_node(library):
    """x's last dimension is symbolic at session creation: checked on every call."""
    lin = make_linear((1, 64), 8, "int8")
    sess = session(linear_model(lin, x_shape=["T", "K"]), library)
    with pytest.raises(Exception, match="linear0.*want \\[\\.\\.\\., 64\\]"):  # noqa: B017
        sess.run(None, {"x": np.zeros((1, 63), np.float32)})


def test_wrong_activation_dtype_is_onnx_runtimes_error(library):
    from onnx import TensorProto

    lin = make_linear((1, 64), 8, "fp32")
    model = linear_model(lin)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(Exception) as info:  # noqa: B017
        session(model, library)
    message = str(info.value)
    assert "linear0" in message and "tensor(double)" in message, message
