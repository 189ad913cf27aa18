"""llama.cpp as the benchmark's peer: finding its tools, parsing llama-bench's JSON (a file it wrote here),
reading llama-debug's logits files, the ratios and targets. The live test runs only where a llama.cpp
build is given (MIXTRAL_TRT_LLAMA_CPP=DIR); llama.cpp is not a CI dependency."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mixtral_trt.bench.peer_llamacpp import (
    FP32_LOGITS_TOLERANCE,
    LlamaCppTools,
    compare_logits,
    convert_checkpoint,
    find_llama_cpp,
    llama_bench_command,
    parse_llama_bench,
    peer_kinds,
    peer_ratios,
    peer_step_bytes,
    peer_targets,
    read_debug_logits,
)
from mixtral_trt.bench.roofline import step_bytes
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.mixtral_ref import get_preset

DATA = Path(__file__).parent / "data"


def test_parse_llama_bench_output():
    """A llama-bench -o json run (q4_0 GGUF of `small`, -p 8 -n 4 -d 0,8 -r 2): decode is the generation
    test at the context depth, prefill the prompt test from an empty cache; the other two are dropped."""
    parsed = parse_llama_bench((DATA / "llama_bench_q4_0.json").read_text(), context=8)
    fig = parsed["small-q4_0.gguf"]
    assert set(fig) == {"decode", "prefill"}
    assert fig["prefill"]["samples"] == [290.318, 261.562] and fig["prefill"]["tokens"] == 8
    assert fig["prefill"]["best"] == 290.318 and fig["prefill"]["median"] == pytest.approx((290.318 + 261.562) / 2)
    assert fig["decode"]["tokens"] == 4 and fig["decode"]["best"] == max(fig["decode"]["samples"])
    assert parse_llama_bench((DATA / "llama_bench_q4_0.json").read_text(), context=64) == {
        "small-q4_0.gguf": {"prefill": fig["prefill"]}}  # no decode at that depth
    with pytest.raises(MixtralTrtError, match="not JSON"):
        parse_llama_bench("build: 0c1e570\n| model | size |", context=8)


def test_ratios_and_targets():
    peer = {"fp32": {"decode": {"best": 100.0}, "prefill": {"best": 1000.0}}, "int8": {"decode": {"best": 300.0}},
            "int4": {"decode": {"best": 400.0}, "prefill": {"best": 500.0}},
            "bf16": {"decode": {"best": 160.0}, "prefill": {"best": 800.0}}}
    ours = {"fp32 decode": 120.0, "int8 decode": 200.0, "int4 decode": 360.0, "fp16 decode": None,
            "fp32 prefill": 900.0, "int4 prefill": 600.0, "bf16 decode": 200.0, "bf16 prefill": 640.0}
    rows = peer_ratios(ours, peer)
    assert rows["fp32 decode"]["ratio"] == pytest.approx(1.2) and rows["fp32 decode"]["llama_cpp_type"] == "f32"
    assert rows["int8 decode"]["ratio"] == pytest.approx(2 / 3) and rows["int4 decode"]["ratio"] == pytest.approx(0.9)
    assert rows["fp16 decode"]["ratio"] is None and rows["fp32 prefill"]["ratio"] == pytest.approx(0.9)
    assert rows["bf16 decode"]["llama_cpp_type"] == "bf16" and rows["bf16 decode"]["ratio"] == pytest.approx(1.25)
    assert rows["bf16 prefill"]["ratio"] == pytest.approx(0.8) and rows["int4 prefill"]["ratio"] == pytest.approx(1.2)
    assert rows["int8 prefill"] == {"ours": None, "llama_cpp": None, "llama_cpp_type": "q8_0", "ratio": None}
    assert peer_targets(rows) == {
        "fp32 decode >= 1.0x": True, "bf16 decode >= 1.0x": True, "int8 decode >= 1.0x": False,
        "int4 decode >= 1.0x": False, "fp32 prefill >= 1.0x": False, "bf16 prefill >= 1.0x": False,
        "int8 prefill >= 1.0x": None, "int4 prefill >= 1.0x": True}


def test_peer_bytes_per_step():
    cfg = get_preset("small")
    assert peer_step_bytes(cfg, "fp32") == step_bytes(cfg)
    assert peer_step_bytes(cfg, "fp16").total == pytest.approx(step_bytes(cfg).total / 2, rel=1e-3)
    assert peer_step_bytes(cfg, "bf16") == peer_step_bytes(cfg, "fp16")
    q8, q4 = peer_step_bytes(cfg, "int8"), peer_step_bytes(cfg, "int4")
    assert q8.experts == pytest.approx(step_bytes(cfg).experts * 34 / 32 / 4)
    assert q4.experts == pytest.approx(step_bytes(cfg).experts * 18 / 32 / 4) and q8.fixed > q4.fixed


def _exe(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_find_llama_cpp(tmp_path):
    with pytest.raises(MixtralTrtError, match="llama-bench, llama-quantize, convert_hf_to_gguf.py not found"):
        find_llama_cpp(tmp_path)
    with pytest.raises(MixtralTrtError, match="not a directory"):
        find_llama_cpp(tmp_path / "absent")
    _exe(tmp_path / "build" / "bin" / "llama-bench")
    _exe(tmp_path / "build" / "bin" / "llama-quantize")
    (tmp_path / "gguf-py").mkdir()
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    tools = find_llama_cpp(tmp_path)
    assert tools.bench == tmp_path / "build" / "bin" / "llama-bench" and tools.debug is None
    assert tools.gguf_py == tmp_path / "gguf-py"
    cmd = llama_bench_command(tools, [Path("a.gguf"), Path("b.gguf")], 2, 128, 64, 512)
    assert cmd[1:] == ["-m", "a.gguf", "-m", "b.gguf", "-t", "2", "-p", "512", "-n", "64", "-d", "0,128", "-r", "5",
                       "-o", "json"]


def test_convert_writes_each_type_once(tmp_path):
    """f32 / bf16 / q8_0 through convert_hf_to_gguf.py --outtype, q4_0 through llama-quantize of the f32 file;
    the GGUFs are cached (a stand-in convert script and quantize tool record their arguments)."""

    log = tmp_path / "calls.txt"
    convert = tmp_path / "convert_hf_to_gguf.py"
    convert.write_text("import sys\n"
                       f"open({str(log)!r}, 'a').write('convert ' + ' '.join(sys.argv[2:]) + '\\n')\n"
                       "open(sys.argv[sys.argv.index('--outfile') + 1], 'w').write('gguf')\n")
    quantize = tmp_path / "llama-quantize"
    quantize.write_text(f"#!/bin/sh\necho quantize $2 $3 >> {log}\ncp $1 $2\n")
    quantize.chmod(0o755)
    tools = LlamaCppTools(tmp_path, tmp_path / "llama-bench", quantize, convert, None, None)
    paths = convert_checkpoint(tools, tmp_path / "ckpt", tmp_path / "gguf", ("fp32", "bf16", "int8", "int4"))
    assert {k: p.name for k, p in paths.items()} == {"fp32": "model-f32.gguf", "bf16": "model-bf16.gguf",
                                                      "int8": "model-q8_0.gguf", "int4": "model-q4_0.gguf"}
    calls = log.read_text().splitlines()
    gguf = tmp_path / "gguf"
    assert calls == [f"convert --outtype f32 --outfile {gguf}/model-f32.tmp.gguf",
                     f"convert --outtype bf16 --outfile {gguf}/model-bf16.tmp.gguf",
                     f"convert --outtype q8_0 --outfile {gguf}/model-q8_0.tmp.gguf",
                     f"quantize {gguf}/model-q4_0.tmp.gguf q4_0"]
    assert convert_checkpoint(tools, tmp_path / "ckpt", gguf, ("bf16",)) == {"bf16": paths["bf16"]}
    assert len(log.read_text().splitlines()) == 4


def test_only_the_kinds_of_ours_measured_are_converted():
    """f16 only when our fp16 engine was measured (bench --fp16); fp32 always (the logits check reads it)."""
    ours = {"fp32 decode": 120.0, "fp16 decode": None, "bf16 decode": 150.0, "int4 decode": 400.0,
            "int4 prefill": 900.0}
    assert peer_kinds(ours) == ("fp32", "bf16", "int4")
    assert peer_kinds({**ours, "fp16 decode": 90.0, "int8 prefill": 700.0}) == ("fp32", "fp16", "bf16", "int8",
                                                                                "int4")
    assert peer_kinds({}) == ("fp32",)


def test_debug_logits_files_and_comparison(tmp_path):
    ids = np.array([1, 415, 5565], np.int32)
    logits = np.linspace(-3, 5, 32, dtype=np.float32)
    ids.tofile(tmp_path / "llamacpp-model-f32-tokens.bin")
    logits.tofile(tmp_path / "llamacpp-model-f32.bin")
    got_ids, got = read_debug_logits(tmp_path, Path("x/model-f32.gguf"))
    assert got_ids.tolist() == [1, 415, 5565] and np.array_equal(got, logits)
    cmp = compare_logits(got + 5e-4, logits)
    assert cmp["relative_error"] == pytest.approx(1e-4, rel=1e-3) and cmp["top1_match"]
    with pytest.raises(MixtralTrtError, match="llama-debug wrote no llamacpp-other-tokens.bin"):
        read_debug_logits(tmp_path, Path("other.gguf"))


@pytest.mark.skipif(not os.environ.get("MIXTRAL_TRT_LLAMA_CPP"), reason="no llama.cpp (MIXTRAL_TRT_LLAMA_CPP=DIR)")
def test_live_peer_on_tiny(cli, tmp_path):
    """bench --peer llama.cpp on the tiny preset: converted GGUFs, logits within fp32 tolerance, ratios."""
    import json

    out = tmp_path / "bench.json"
    result = cli("bench", "--preset", "tiny", "--backends", "ort", "--no-hf", "--json", out, "--workdir",
                 tmp_path / "work", "--context", "8", "--new-tokens", "4", "--prefill-tokens", "16",
                 "--quantize", "int8,int4", "--decode-repeats", "1", "--peer", "llama.cpp", "--llama-cpp",
                 os.environ["MIXTRAL_TRT_LLAMA_CPP"])
    assert result.code == 0, result.out + result.err
    peer = json.loads(out.read_text())["peer"]
    assert peer["logits"]["fp32"]["relative_error"] < FP32_LOGITS_TOLERANCE, peer["logits"]["fp32"]
    for row in ("fp32 decode", "int8 decode", "int4 decode", "fp32 prefill", "bf16 decode", "bf16 prefill"):
        assert peer["ratios"][row]["ratio"] > 0, row
