"""Ahead-of-time compilation without a GPU: `plugins compile` for sm_90a and sm_80 writes, per kernel, PTX with
the matching .target, the PTX version of the `--cuda` driver, and an entry taking exactly the kernel's runtime
arguments (what TensorRT passes: Triton's scratch parameters removed), plus a cubin that ptxas assembled from that
PTX; every kernel fits the default 48 KB of shared memory, and every GEMM, compiled with the alignment hints of the
launch contract, loads its tiles with vector or asynchronous copies. Runs in subprocesses (conftest.compile_cli)."""

from __future__ import annotations

import json
import re

import pytest

from mixtral_trt.plugins import ptx
from support.aot import CUDA, compile_cli

GEMMS = ("moe_gemm_swiglu_kernel", "moe_gemm_down_kernel", "moe_gemm_swiglu_q_kernel", "moe_gemm_down_q_kernel",
         "moe_gemm_swiglu_qz_kernel", "moe_gemm_down_qz_kernel")
WIDE_LOADS = re.compile(r"cp\.async\.c[ag]\.|ld\.global(?:\.\w+)*\.v[248]\.")
KERNELS = {"moe_router_kernel", "moe_align_kernel", *GEMMS}


def check_kernels(out, index, arch: str, n_dtypes: int, version: str) -> None:
    kernels = index["kernels"]
    # align + per dtype: router + 3 tactics x (2 GEMMs + 2 quantized GEMMs x (int8, int4) + the zero-point GEMMs
    # for int4 in groups of 128: SwiGLU with and without act-order, down + the 2 FP8 e4m3 GEMMs: the quantized
    # kernels with BITS = F8_E4M3)
    assert len(kernels) == 1 + n_dtypes * 34
    assert {k["kernel"] for k in kernels} == KERNELS
    assert index["arch"] == arch and index["ptx_version"] == version
    for k in kernels:
        text = (out / f"{k['stem']}.ptx").read_text()
        name, params = ptx.entry_params(text)
        runtime_args = [a for a, t in k["signature"].items() if t != "constexpr"]
        assert f".target {arch}" in text and name == k["symbol"], k["stem"]
        assert f".version {version}" in text and k["ptx_version"] == version, k["stem"]
        assert len(params) == len(runtime_args), f"{k['stem']}: {len(params)} entry parameters, {runtime_args}"
        assert (out / f"{k['stem']}.cubin").stat().st_size > 1000, k["stem"]
        assert k["shared_bytes"] <= 48 * 1024, f"{k['stem']} needs {k['shared_bytes']} B of shared memory"
        if k["kernel"] in GEMMS:  # without tt.divisibility hints: 0 (element-wise ld.global only)
            wide = len(WIDE_LOADS.findall(text))
            assert wide >= 2, f"{k['stem']}: {wide} vector / async loads"
    check_no_spills(kernels, arch)


def check_no_spills(kernels: list[dict], arch: str) -> None:
    """ptxas -v's figures (recorded by `plugins compile` as it assembles each PTX): registers within the 255 a
    thread has, and no spill store or load in any kernel; the offenders worst first."""
    usage = {k["stem"]: k["ptxas"] for k in kernels}
    assert all(0 < u["registers"] <= 255 for u in usage.values()), usage
    spills = sorted(((u["spill_stores"] + u["spill_loads"], stem, u) for stem, u in usage.items()
                     if u["spill_stores"] or u["spill_loads"]), reverse=True)
    assert not spills, f"{len(spills)} of {len(usage)} kernels spill registers on {arch} (bytes per thread):\n" + \
        "\n".join(f"  {stem}: {u['registers']} registers, {u['spill_stores']} B stored, {u['spill_loads']} B loaded"
                  for _, stem, u in spills[:10])


def test_plugins_compile_sm90a_for_a_cuda_12_8_driver(sm90a_kernels):
    out, index = sm90a_kernels
    assert index["cuda"] == CUDA
    check_kernels(out, index, "sm_90a", 3, "8.7")


def test_plugins_compile_sm80(tmp_path):
    out = tmp_path / "sm_80"
    # fp16 and fp32 (bf16 takes fp16's tiles; fp32 tiles of its own, which spilled most on sm_80)
    result = compile_cli("--arch", "sm_80", "--cuda", "12.4", "--out", str(out), "--dtypes", "fp16,fp32")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PTX 8.4" in result.stdout
    check_kernels(out, json.loads((out / "kernels.json").read_text()), "sm_80", 2, "8.4")


def test_plugins_compile_rejects_bad_arguments(tmp_path):
    result = compile_cli("--arch", "sm_75", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--arch 'sm_75'" in result.stderr and "Traceback" not in result.stderr
    result = compile_cli("--arch", "sm_80", "--out", str(tmp_path / "y"), "--dtypes", "fp8")
    assert result.returncode == 2 and "--dtypes" in result.stderr
    result = compile_cli("--arch", "sm_90a", "--cuda", "11.8", "--out", str(tmp_path / "z"))
    assert result.returncode == 2 and "sm_90a needs PTX 8.0" in result.stderr, result.stderr
    result = compile_cli("--arch", "sm_90a", "--cuda", "twelve", "--out", str(tmp_path / "w"))
    assert result.returncode == 2 and "--cuda 'twelve'" in result.stderr
    assert not any((tmp_path / d).exists() for d in "xyzw")


def test_plugins_list(cli):
    result = cli("plugins", "list")
    assert result.code == 0
    for name in ("MoERouter", "MoEAlign", "MoEGemmSwiGLU", "MoEGemmDown", "MoEGemmSwiGLUQ", "MoEGemmDownQ",
                 "MoEGemmSwiGLUQZ", "MoEGemmDownQZ", "MoEGemmSwiGLUF8", "MoEGemmDownF8", "w13_order",
                 "ordered", "ceil(M_max / block_size)", "quant_block"):
        assert name in result.out, name


@pytest.mark.parametrize("cuda", ["11.8", "12.0", "12.4", "12.5", "12.6", "12.8", "12.9", "13.0", "13.2", "13.4"])
def test_ptx_version_of_a_driver_follows_tritons_rule(cuda):
    from triton.backends.nvidia.compiler import ptx_get_version

    assert ptx.ptx_for_cuda(cuda) == ptx_get_version(cuda)


def test_ptx_version_policy():
    assert ptx.choose_ptx("sm_90a", "12.8", 94) == 87  # the driver's ISA
    assert ptx.choose_ptx("sm_90a", "13.6", 94) == 94  # never above what Triton's ptxas assembles
    assert ptx.choose_ptx("sm_90a", None, 94) is None  # no driver known: Triton's own
    with pytest.raises(Exception, match="sm_90a needs PTX 8.0"):
        ptx.choose_ptx("sm_90a", "11.8", 94)
    assert ptx.choose_ptx("sm_80", "11.8", 88) == 78


ENTRY = """.version 9.4
.target sm_90a
.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2,
\t.param .u64 .ptr .global .align 1 k_param_3
)
{
\tld.param.u64 %rd1, [k_param_0];
}
"""


def test_scratch_parameters_are_removed_only_when_unused():
    text = ptx.strip_scratch_params(ENTRY, 2, (0, 0))
    assert ptx.entry_params(text) == ("k", [".param .u64 .ptr .global .align 1 k_param_0", ".param .u32 k_param_1"])
    assert "ld.param.u64 %rd1, [k_param_0];" in text and ptx.written_ptx(text) == 94
    assert ptx.strip_scratch_params(ENTRY, 4, (0, 0)) == ENTRY
    with pytest.raises(Exception, match=r"scratch sizes \(global, profile\) \(256, 0\)"):
        ptx.strip_scratch_params(ENTRY, 2, (256, 0))


def test_a_process_that_interprets_compiles_in_a_worker(sm90a_kernels):
    """This test session runs the kernels in Triton's interpreter (conftest), so compiling here, as TensorRT's
    aot_impl does in a `pytest -m gpu` session, goes to a worker process: the same PTX as `plugins compile`."""
    import mixtral_trt.plugins.moe_router.kernel  # noqa: F401  (imported for the interpreter, as the kernel tests do)
    from mixtral_trt.plugins import PLUGINS, aot
    from mixtral_trt.plugins.interpreter import compiler_available

    assert not compiler_available()
    variant = PLUGINS["MoERouter"].module("aot").variant("bf16", 2, 8)
    compiled = aot.compile_variant(variant, aot.target("sm_90a", CUDA))
    out, index = sm90a_kernels
    expected = next(k for k in index["kernels"] if k["stem"] == variant.stem)
    assert compiled.ptx == (out / f"{variant.stem}.ptx").read_text() and compiled.name == expected["symbol"]
    assert (compiled.num_warps, compiled.shared, compiled.ptx_version) == (expected["num_warps"],
                                                                           expected["shared_bytes"], 87)
    assert aot.compile_variant(variant, aot.target("sm_90a", CUDA)) is compiled  # once per variant and target


def test_alignment_hints_and_the_limits_of_the_launch_contract():
    from mixtral_trt.common.errors import MixtralTrtError
    from mixtral_trt.plugins import aot
    from mixtral_trt.plugins.moe_gemm_down_q.aot import variant as gemm_down_q_variant
    from mixtral_trt.plugins.moe_gemm_down_q.kernel import moe_gemm_down_q_kernel

    variant = gemm_down_q_variant("fp16", 1, 4, 32)
    attrs = aot.alignment_attrs(moe_gemm_down_q_kernel, variant.signature)
    hinted = {moe_gemm_down_q_kernel.arg_names[i] for (i,) in attrs}
    assert hinted == {"inter_ptr", "sorted_ptr", "block_experts_ptr", "num_padded_ptr", "weights_ptr", "codes_ptr",
                      "scales_ptr", "y_ptr", "H", "INTER"}  # not P, M_MAX, E: any value
    assert all(v == [["tt.divisibility", 16]] for v in attrs.values())
    aot.check_aligned_sizes(4096, 14336, "x")
    with pytest.raises(MixtralTrtError, match=r"^config.json: intermediate_size 52 is not a multiple of 16, which the "
                                              r"TensorRT plugin kernels need") as e:
        aot.check_aligned_sizes(64, 52, "config.json")
    assert "\n" not in str(e.value)
    aot.check_shared("k", 48 * 1024)
    with pytest.raises(MixtralTrtError, match="kernel k: 73728 B of shared memory, above the 49152 B"):
        aot.check_shared("k", 73728)
