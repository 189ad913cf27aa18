"""bench/cpu_kernels_layer.py: one MoE layer of ours per dtype and forced instruction-set path, on the `tiny`
preset (the paths' outputs checked to agree by the bench itself)."""

from __future__ import annotations

import pytest

from mixtral_trt.bench.cpu_kernels_layer import layer_cpu_ms
from mixtral_trt.plugins import cpu_kernels
from support.cpu_kernels import library_or_skip


def test_times_each_dtype_on_each_path():
    library = library_or_skip()
    isas = tuple(i for i in ("amx", "avx512", "portable") if i in cpu_kernels.supported_isas(library))
    got = layer_cpu_ms("tiny", tokens=40, isas=isas, dtypes=("bf16", "int4"), repeats=1)
    assert set(got) == {"bf16", "int4"} and all(set(row) == set(isas) for row in got.values()), got
    assert all(ms >= 0 for row in got.values() for ms in row.values()), got


def test_unknown_path_is_an_error():
    library_or_skip()
    with pytest.raises(Exception, match="MIXTRAL_TRT_CPU_ISA=sse9"):  # noqa: B017 (ONNX Runtime's own exception)
        layer_cpu_ms("tiny", tokens=4, isas=("sse9",), dtypes=("fp32",), repeats=1)
