"""The device check's phase 3 on CPU: the launch file recorded from TensorRT's own plugin layer
(support/launch_record.py, what `make device-check-launches` writes; here with the session's sm_90a PTX for a
CUDA 12.8 driver), then replayed as a GPU machine would, except that the `tiny` layers' launches run the Triton
kernels under the interpreter instead of cuLaunchKernel: exactly the recorded grid, block, scalars and argument
order against the references; each registration's aot_impl through the minimal `tensorrt.plugin` stand-in
(bench/device_check/trt_standin.py) against what TensorRT's plugin layer gave. A launch parameter put wrong in
the file is caught."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from mixtral_trt.bench.device_check import contract, launches
from mixtral_trt.bench.device_check.report import Report
from mixtral_trt.plugins import aot, ptx
from support.aot import CUDA

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None or importlib.util.find_spec("tensorrt_bindings") is None,
    reason="needs tensorrt-rtx-cu13 and tensorrt-cu13-bindings (the dev extra)")


@pytest.fixture(scope="module")
def document(sm90a_kernels, tmp_path_factory):
    from support.launch_record import record

    out, index = sm90a_kernels
    by_stem = {k["stem"]: k for k in index["kernels"]}

    real_compile = aot.compile_variant  # record() puts its own in place while it runs

    def compiled(variant, where):  # `plugins compile`'s output for the variant aot_impl asks for
        assert where.arch == "sm_90a" and where.cuda == CUDA
        if variant.stem not in by_stem:  # not a default variant (the tiny layers' QZ in groups of 32): compile it
            return real_compile(variant, where)
        k = by_stem[variant.stem]
        text = (out / f"{variant.stem}.ptx").read_text()
        return aot.Compiled(k["symbol"], text, None, k["num_warps"], k["shared_bytes"], ptx.written_ptx(text))

    directory = tmp_path_factory.mktemp("launches") / "launches"
    record(directory, "sm_90a", CUDA, compile_fn=compiled)
    return launches.load(directory)


def run_phase(tmp_path, doc) -> dict:
    report = Report(tmp_path, "cpu", 900)
    with report.phase("launch contract", 900, "cpu") as phase:
        contract.run_phase(phase, "cpu", doc, None)
    return report.data["phases"]["launch contract"]


def test_the_launch_file_holds_every_variant(document):
    from mixtral_trt.plugins.moe_gemm_down_qz.aot import variant as down_qz
    from mixtral_trt.plugins.moe_gemm_swiglu_qz.aot import variant as swiglu_qz

    # and the tiny layers' QZ variants (int4 in groups of 32: tiny's sizes are not multiples of 128)
    tiny_stored = {v.stem for d in ("fp32", "fp16", "bf16") for tactic in (1, 2, 3) for v in (
        swiglu_qz(d, 2, tactic, 4, 32, False), swiglu_qz(d, 2, tactic, 4, 32, True), down_qz(d, tactic, 4, 32))}
    assert {k for k in document["kernels"]} == {v.stem for v in aot.default_variants()} | tiny_stored
    assert document["target"] == {"arch": "sm_90a", "cuda": CUDA, "ptx_version": ptx.format_ptx(ptx.ptx_for_cuda(CUDA))}
    assert len(document["layers"]) == 2 * 18  # 2 shapes x 3 dtypes x (float, int8, int4, int4 zeros, act-order, fp8)
    for layer in document["layers"]:
        assert [len(n["launches"]) for n in layer["nodes"]] == [1, 1, 3, 3]
        for node in layer["nodes"]:
            for launch in node["launches"]:
                assert sorted(map(int, launch["at"])) == launches.RECORDED_T[layer["shape"]]
    # 8x7B bf16 int4 SwiGLU GEMM, decode tactic, T = 1: M_max = 2 + 8 * 63 = 506 rows in 16-row tiles, I / 64 columns
    layer = next(x for x in document["layers"] if (x["shape"], x["dtype"], x["quant"]) == ("mixtral-8x7b", "bf16",
                                                                                             "int4"))
    swiglu = layer["nodes"][2]["launches"][0]
    assert swiglu["tactic"] == 1 and swiglu["at"]["1"]["grid"] == [32, 14336 // 64, 1]
    # scalars: H, I, k, then M_max and E (the bounds the kernel clamps made-up index data to)
    assert swiglu["at"]["1"]["scalars"] == [4096, 14336, 2, 506, 8] and swiglu["at"]["1"]["block"] == [128, 1, 1]


def test_recorded_launches_replay_against_the_references(document, tmp_path):
    result = run_phase(tmp_path, document)
    print(json.dumps({k: result["figures"][k] for k in ("launches", "aot_impl_launches_compared",
                                                         "launch_parameter_mismatches")}))
    assert result["status"] == "passed", [c for c in result["checks"] if not c["passed"]] or result.get("error")
    assert result["figures"]["launch_parameter_mismatches"] == 0
    expected = sum(len(launch["at"]) for layer in document["layers"] for node in layer["nodes"]
                   for launch in node["launches"])
    assert result["figures"]["aot_impl_launches_compared"] == expected
    # tiny layers at T = 37 (float, int8, int4, int4 zeros, act-order, fp8 x 3 dtypes): router + align always, the
    # GEMMs (3 tactics x 2) except bf16 (the interpreter's dot)
    assert result["figures"]["launches"] == 18 * 2 + 12 * 6


def test_a_wrong_launch_parameter_is_caught(document, tmp_path):
    doc = copy.deepcopy(document)
    tiny = next(x for x in doc["layers"] if (x["shape"], x["dtype"], x["quant"]) == ("tiny", "fp32", None))
    at = tiny["nodes"][2]["launches"][1]["at"]["37"]
    at["scalars"][0], at["scalars"][1] = at["scalars"][1], at["scalars"][0]  # H and I swapped
    big = next(x for x in doc["layers"] if (x["shape"], x["dtype"], x["quant"]) == ("mixtral-8x7b", "fp16", "int8"))
    big["nodes"][3]["launches"][2]["at"]["4096"]["grid"][1] += 1
    result = run_phase(tmp_path, doc)
    failed = [c["what"] for c in result["checks"] if not c["passed"]]
    assert result["status"] == "failed"
    assert any(w.startswith("tiny T=37 fp32 float MoEGemmSwiGLU tactic 2") for w in failed), failed
    assert any("mixtral-8x7b fp16 MoEGemmDownQ tactic 3 T=4096" in w for w in failed), failed
    assert result["figures"]["launch_parameter_mismatches"] >= 2
