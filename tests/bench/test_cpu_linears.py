"""`mixtral-export bench-cpu-linears`: one-node sessions of our linears beside ONNX Runtime's MatMul / MatMulNBits
over the same weight (the bench first checks they agree: ours against MatMulNBits' own int8-activation kernel),
on the `tiny` preset's shapes, one round; and its one-line errors."""

from __future__ import annotations

import json

import pytest

from support.cpu_kernels import library_or_skip


@pytest.fixture(scope="module", autouse=True)
def library():
    return library_or_skip()


def test_bench_cpu_linears_compares_each_linear(cli, tmp_path):
    out = tmp_path / "linears.json"
    result = cli("bench-cpu-linears", "--preset", "tiny", "--formats", "int4,bf16", "--rows", "1,3", "--rounds", "1",
                 "--threads", "1", "--json", out)
    assert result.code == 0, result.err
    rows = json.loads(out.read_text())["results"]
    names = {f"{fmt} {linear} T={t}" for fmt in ("int4", "bf16") for linear in ("lm_head [32000x64]",
                                                                               "wq/wo [64x64]", "wk/wv [32x64]")
             for t in (1, 3)}
    assert {name for name in rows} == names, sorted(rows)
    for row in rows.values():
        assert row["ours"]["best_ms"] > 0 and row["ort"]["best_ms"] > 0 and row["copies"] >= 1
    assert "our linears vs ONNX Runtime's" in result.out


@pytest.mark.parametrize(("args", "message"), [(["--formats", "fp8"], "--formats 'fp8': choose from"),
                                               (["--rounds", "0"], "--rounds and --threads must be >= 1"),
                                               (["--rows", "1,x"], "--rows '1,x': comma-separated row counts")])
def test_bad_arguments(cli, tmp_path, args, message):
    result = cli("bench-cpu-linears", *args, "--json", tmp_path / "x.json")
    assert result.code == 2 and message in result.err, result.err
    assert not (tmp_path / "x.json").exists()


def test_bad_baseline(cli, tmp_path):
    result = cli("bench-cpu-kernels", "--baseline", "mlas", "--workdir", tmp_path, "--json", tmp_path / "x.json")
    assert result.code == 2 and "--baseline 'mlas': choose one of ort, ort-linears" in result.err, result.err


def test_kernel_rates_times_each_library_per_row_count(library):
    from mixtral_trt.bench.cpu_linears import kernel_rates

    result = kernel_rates([str(library), str(library)], ("int8", "int4"), (1, 3), n=64, k=96, rounds=1,
                          target_s=0.002)
    assert set(result["results"]) == {"int8 M=1", "int8 M=3", "int4 M=1", "int4 M=3"}
    for row in result["results"].values():
        assert list(row) == [str(library)]  # the same library twice: one column
        assert 0 < row[str(library)]["best"] < 1e4 and row[str(library)]["median"] > 0


def test_kernel_rates_refuses_a_shape_the_kernels_do_not_take(library):
    from mixtral_trt.bench.cpu_linears import kernel_rates
    from mixtral_trt.common.errors import MixtralTrtError

    with pytest.raises(MixtralTrtError, match="refused int4 M=1 N=64 K=100 B=32"):
        kernel_rates([str(library)], ("int4",), (1,), n=64, k=100, rounds=1, target_s=0.001)
