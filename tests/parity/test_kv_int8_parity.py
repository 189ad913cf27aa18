"""`mixtral-export parity` on int8-KV engines: judged against mixtral_ref rounding its cache the same way, at the
engine dtype's own tolerance (parity/tolerance.py), with the error against the float-cache reference reported
beside it (and far larger: the reference did round its cache)."""

from __future__ import annotations

import json

import pytest

from mixtral_trt.parity import TOLERANCES
from support.engines import engine


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_int8_kv_engine_passes_parity_against_the_int8_reference(checkpoint, root, dtype, tmp_path, cli):
    eng = engine(checkpoint, root, dtype=dtype, kv_cache="int8")
    result = cli("parity", eng, "--checkpoint", checkpoint, "--json", tmp_path / "p.json", "--steps", "12")
    report = json.loads((tmp_path / "p.json").read_text())
    summary = (f"int8 KV {dtype}: logits rel {report['logits']['max_rel']:.2e}, "
               f"vs float-cache reference {report['kv_cache']['logits_rel_vs_float_kv']:.2e}, "
               f"greedy {[g['matched'] for g in report['greedy']]}")
    print(summary)
    assert result.code == 0 and report["passed"], f"{summary}; {report['failures']}"
    assert report["logits"]["max_rel"] < TOLERANCES[dtype].logits_rel
    assert report["kv_cache"]["kind"] == "int8" and "KV cache" in result.out
    if dtype == "fp32":
        assert all(g["exact"] for g in report["greedy"]), summary
        assert report["kv_cache"]["logits_rel_vs_float_kv"] > 100 * report["logits"]["max_rel"], summary
