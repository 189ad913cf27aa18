"""`plugins spills` (plugins/spills.py) reads ptxas -v correctly: a tile known to spill (the fp32 SwiGLU decode tile
of before the retiling, 16 x 64 x 64 on 4 warps: 255 registers and ~800 B/thread of spills on sm_80) is reported
as spilling, and today's tile of the same variant is not. That no default variant spills is checked on every
`plugins compile` of the AOT tests (test_aot.check_no_spills, sm_90a all dtypes, sm_80 fp16 and fp32); all of
them on both architectures: `make plugins-spills`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mixtral_trt.plugins import aot, spills
from mixtral_trt.plugins.moe_gemm_swiglu.aot import variant as swiglu_variant


def test_ptxas_log_is_parsed():
    log = ("ptxas info    : 0 bytes gmem\nptxas info    : Compiling entry function 'k' for 'sm_80'\n"
           "ptxas info    : Function properties for k\n"
           "    832 bytes stack frame, 440 bytes spill stores, 392 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 832 bytes cumulative stack size, 360 bytes cmem[0]\n")
    assert aot.parse_ptxas_log(log) == aot.Usage(255, 440, 392, 832, 0)
    with pytest.raises(ValueError, match="no register count"):
        aot.parse_ptxas_log("ptxas fatal : Unsupported .version 9.4")


def test_a_spilling_tile_is_reported_and_todays_is_not(cli, monkeypatch, tmp_path):
    """`plugins spills` over two variants (compiled in worker processes): the table, the JSON, exit 1."""
    import json

    today = swiglu_variant("fp32", 2, 1)
    before = replace(today, constexprs={**today.constexprs, "BLOCK_K": 64}, num_warps=4)
    monkeypatch.setattr(aot, "default_variants", lambda *args: [before, today])
    result = cli("plugins", "spills", "--arch", "sm_80", "--cuda", "12.4", "--json", tmp_path / "spills.json")
    assert result.code == 1, result.out + result.err
    assert f"1 of 2 variants spill; worst: {before.stem} (sm_80)" in result.out, result.out
    assert "| moe_gemm_swiglu | sm_80 | fp32 | float | 16x64x64 | 4 | 2 | 255 |" in result.out, result.out
    rows = [spills.SpillRow(**{**r, "usage": aot.Usage(**r["usage"])})
            for r in json.loads((tmp_path / "spills.json").read_text())]
    by_warps = {r.num_warps: r for r in rows}
    assert by_warps[4].usage.spills > 100 and by_warps[4].usage.registers == 255, by_warps[4]
    assert by_warps[today.num_warps].usage.spills == 0, by_warps[today.num_warps]
    assert [r.stem for r in spills.spilling(rows)] == [before.stem]


def test_spills_cli_rejects_an_unknown_arch(cli):
    result = cli("plugins", "spills", "--arch", "sm_75")
    assert result.code == 2 and "--arch: 'sm_75'" in result.out + result.err


def test_jit_usage_reads_what_the_driver_reported_at_load():
    """On a GPU the device check reads registers and spills of Triton's JIT-compiled GEMMs (bench/device_check,
    phase 2). No GPU here: a kernel cache laid out as Triton's (JITFunction.device_caches[device] = (kernels by key,
    kernel keys, target, backend, binder); CompiledKernel.n_regs / n_spills set when the driver loads it)."""
    from types import SimpleNamespace

    from mixtral_trt.plugins.moe_gemm_down.kernel import moe_gemm_down_kernel as fn

    names = fn.arg_names
    meta = SimpleNamespace(num_warps=4, num_stages=3, shared=20480)
    loaded = SimpleNamespace(metadata=meta, n_regs=96, n_spills=8,
                             src=SimpleNamespace(constants={(names.index("BLOCK_M"),): 16, (names.index("H"),): 1}))
    unloaded = SimpleNamespace(metadata=meta, n_regs=None, n_spills=None, src=None)
    fake = SimpleNamespace(__name__="moe_gemm_down_kernel", arg_names=names,
                           constexprs=[names.index(a) for a in ("ALIGN", "BLOCK_M", "BLOCK_N", "BLOCK_K", "IEEE")],
                           device_caches={0: ({"a": loaded, "b": unloaded}, {}, None, None, None)})
    assert spills.jit_usage(fake) == [{"kernel": "moe_gemm_down_kernel", "constexprs": {"BLOCK_M": 16},
                                       "num_warps": 4, "num_stages": 3, "shared": 20480, "registers": 96,
                                       "spills": 8}]
    assert spills.jit_usage(fn) == []  # nothing compiled in this (interpreting) process
