"""Ahead-of-time compilation without a GPU: `plugins compile` for sm_90a and sm_80 writes PTX (with the
matching .target) and cubin for every kernel; every kernel fits the default 48 KB of shared memory.
Runs in a subprocess: this pytest process has triton in interpreter mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def compile_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "from mixtral_trt.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, "plugins", "compile", *args], capture_output=True,
                          text=True, env=env, timeout=900)


@pytest.mark.parametrize(("arch", "dtypes"), [("sm_90a", "fp16,bf16,fp32"), ("sm_80", "fp16")])
def test_plugins_compile(arch, dtypes, tmp_path):
    out = tmp_path / arch
    result = compile_cli("--arch", arch, "--out", str(out), "--dtypes", dtypes)
    assert result.returncode == 0, result.stderr[-2000:]
    index = json.loads((out / "kernels.json").read_text())
    kernels = index["kernels"]
    n_dtypes = len(dtypes.split(","))
    # align + per dtype: router + 3 tactics x (2 GEMMs + 2 quantized GEMMs x (int8, int4))
    assert len(kernels) == 1 + n_dtypes * 19
    assert {k["kernel"] for k in kernels} == {"moe_router_kernel", "moe_align_kernel", "moe_gemm_swiglu_kernel",
                                              "moe_gemm_down_kernel", "moe_gemm_swiglu_q_kernel",
                                              "moe_gemm_down_q_kernel"}
    for k in kernels:
        ptx = (out / f"{k['stem']}.ptx").read_text()
        assert f".target {arch}" in ptx and f".entry {k['symbol']}" in ptx, k["stem"]
        assert (out / f"{k['stem']}.cubin").stat().st_size > 1000, k["stem"]
        assert k["shared_bytes"] <= 48 * 1024, f"{k['stem']} needs {k['shared_bytes']} B of shared memory"


def test_plugins_compile_rejects_bad_arguments(tmp_path):
    result = compile_cli("--arch", "sm_75", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--arch 'sm_75'" in result.stderr and "Traceback" not in result.stderr
    result = compile_cli("--arch", "sm_80", "--out", str(tmp_path / "y"), "--dtypes", "fp8")
    assert result.returncode == 2 and "--dtypes" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_plugins_list(cli):
    result = cli("plugins", "list")
    assert result.code == 0
    for name in ("MoERouter", "MoEAlign", "MoEGemmSwiGLU", "MoEGemmDown", "MoEGemmSwiGLUQ", "MoEGemmDownQ",
                 "ceil(M_max / block_size)", "quant_block"):
        assert name in result.out, name
