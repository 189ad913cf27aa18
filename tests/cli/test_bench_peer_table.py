"""`bench --peer llama.cpp`'s table: our best form named per row, rows with nothing measured left out, the GGUF
kinds not converted said so (no llama.cpp needed: the table is printed from the peer section of bench.json)."""

from __future__ import annotations

from rich.console import Console

from mixtral_trt.bench.peer_llamacpp import peer_ratios
from mixtral_trt.cli.bench_cmd import print_peer


def test_peer_table_names_our_form_and_the_skipped_kinds():
    ours = {"fp32 decode": 90.0, "int4 decode": 400.0, "bf16 decode": 120.0}
    figures = {"fp32": {"decode": {"best": 100.0}}, "int4": {"decode": {"best": 500.0}},
               "bf16": {"decode": {"best": 150.0}}}
    peer = {"ratios": peer_ratios(ours, figures),
            "ours_backend": {"fp32 decode": "ort-gqa", "int4 decode": "ort (moe)", "bf16 decode": "ort-gqa"},
            "skipped": {"f16": "none of our engines of this kind was measured"},
            "logits": {"fp32": {"checked": False, "reason": "llama-debug not found: logits not checked"}}}
    console = Console(record=True, width=200)
    print_peer(console, peer)
    text = console.export_text()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│")}
    assert rows["fp32 decode (f32)"] == ["90.0", "ort-gqa", "100.0", "0.90"], text
    assert rows["int4 decode (q4_0)"] == ["400.0", "ort (moe)", "500.0", "0.80"], text
    assert rows["bf16 decode (bf16)"] == ["120.0", "ort-gqa", "150.0", "0.80"], text
    assert not [r for r in rows if r.startswith("fp16") or r.startswith("int8")], text  # nothing measured
    assert "llama.cpp f16: not converted or measured (none of our engines of this kind was measured)" in text
