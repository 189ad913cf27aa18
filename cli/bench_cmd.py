"""`mixtral-export bench`: decode / prefill speed of every backend, the reference and HF, the MoE layer
alone, memory bandwidth and the decode roofline — in one run, as JSON and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.bench.plot import save_bench_plot
from mixtral_trt.common.backends import BACKENDS
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.common.progress import make_progress
from mixtral_trt.plugins import cpu_kernels

from .app import app


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _chosen(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """A comma-separated option's items, each one of `allowed` (else a one-line error naming `option`)."""
    chosen = _items(text)
    for item in chosen:
        if item not in allowed:
            raise MixtralTrtError(f"{option} {item!r}: choose from {', '.join(allowed)}")
    return chosen


def _check_counts(rounds: int, threads: int) -> None:
    if rounds < 1 or threads < 1:
        raise MixtralTrtError("--rounds and --threads must be >= 1")


@app.command("bench")
def bench(
    preset: Annotated[str, typer.Option(help="Model preset (random weights).")] = "small",
    backends: Annotated[str, typer.Option(help=f"Comma-separated, from: {','.join(BACKENDS)}.")] = ",".join(BACKENDS),
    json_path: Annotated[Path, typer.Option("--json", help="Write the results here.")] = Path("bench.json"),
    plot: Annotated[Path | None, typer.Option(help="Write the PNG here (default: beside the JSON).")] = None,
    workdir: Annotated[Path, typer.Option(help="Cache for the checkpoint, export and engines.")] = Path("bench-out"),
    context: Annotated[int, typer.Option(help="Decode: prompt tokens before the timed steps.")] = 128,
    new_tokens: Annotated[int, typer.Option(help="Decode: timed greedy steps.")] = 64,
    prefill_tokens: Annotated[int, typer.Option(help="Prefill: prompt length.")] = 512,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    hf: Annotated[bool, typer.Option(help="Include HF transformers (eager) when installed.")] = True,
    quantize: Annotated[str, typer.Option(help="Also measure ONNX Runtime engines with weight-only quantized "
                                          "experts, comma-separated: int8,int4 (empty: none).")] = "int8,int4",
    fp16: Annotated[bool, typer.Option(help="Also measure an fp16 export on the ort backend.")] = False,
    bf16: Annotated[bool, typer.Option(help="Also measure bf16 experts on our CPU kernels (ort backend; always "
                                       "with --peer).")] = False,
    decode_repeats: Annotated[int, typer.Option(help="Decode runs per implementation (the best is kept).")] = 3,
    peer: Annotated[str | None, typer.Option(help="Also measure a peer on the same checkpoint: llama.cpp.")] = None,
    llama_cpp: Annotated[Path | None, typer.Option("--llama-cpp", help="llama.cpp directory (build or install) "
                                                   "holding llama-bench, llama-quantize, llama-debug and "
                                                   "convert_hf_to_gguf.py.")] = None,
    experts: Annotated[str, typer.Option(help="Expert forms of the ort / ort-gqa engines to measure, "
                                         "comma-separated: ours,matmul,moe (ours: our CPU kernels; the first "
                                         "keeps the backend's name; "
                                         "empty: the build's default).")] = "",
) -> None:
    """Benchmark every available backend against the reference and HF transformers."""
    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.bench.run import BenchSettings, run_bench

    settings = BenchSettings(preset=preset, backends=_items(backends), context=context, new_tokens=new_tokens,
                             prefill_tokens=prefill_tokens, workdir=workdir, threads=threads, hf=hf,
                             quantize=_items(quantize), fp16=fp16, bf16=bf16, decode_repeats=decode_repeats, peer=peer,
                             llama_cpp=llama_cpp, experts=_items(experts))
    with make_progress(transient=True) as progress:
        result = run_bench(settings, progress).to_json()
    with atomic_file(json_path) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    plot_path = save_bench_plot(result, plot or json_path.with_suffix(".png"))
    table = Table(title=f"bench: preset {preset}, fp32, {result['settings']['threads']} threads")
    for col in ("implementation", "decode tok/s (batch 1)", "prefill tok/s"):
        table.add_column(col)
    for name in result["decode"]:
        table.add_row(name, f"{result['decode'][name]:.1f}", f"{result['prefill'][name]:.0f}")
    for key, q in result["quantized"].items():
        decode = f"{q['decode_tok_s']:.1f} (roofline {q['decode_roofline_tok_s']:.0f})"
        table.add_row(key, decode, f"{q['prefill_tok_s']:.0f}")
    console = Console()
    console.print(table)
    moe = result["moe_layer"]
    console.print(f"MoE layer at T={moe['tokens']}: sparse {moe['sparse_ms']:.1f} ms, dense {moe['dense_ms']:.1f} ms "
                  f"({moe['sparse_over_dense']:.2f}x)")
    roof = result["roofline"]
    console.print(f"read bandwidth {roof['measured_gbs']:.1f} GB/s measured ({result['bandwidth']['method']}, best of "
                  f"{len(result['bandwidth']['measurements'])} measurements)"
                  + (f", raised to {roof['roofline_gbs']:.1f} by {roof['raised_by']}" if roof["raised_by"] else "")
                  + f" -> fp32 decode roofline {result['decode_roofline_tok_s']:.0f} tok/s; "
                  f"peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB")
    for name, d in roof["decodes"].items():
        if d["note"]:
            console.print(f"  {name}: {d['fraction']:.2f} of the roofline: {d['note']}")
    if result.get("peer"):
        print_peer(console, result["peer"])
    if c := result["constrained"]:
        console.print(f"constrained decoding (JSON schema, ort): mask {c['mask_ms_mean']:.3f} ms/token "
                      f"(p99 {c['mask_ms_p99']:.3f}) vs decode step {c['decode_step_ms_mean']:.2f} ms = "
                      f"{100 * c['mask_over_decode']:.1f}%; grammar compile {c['compile_ms']:.1f} ms")
    for name, reason in result["skipped"].items():
        console.print(f"skipped {name}: {reason}")
    console.print(f"targets: {result['targets']}")
    console.print(f"wrote {json_path} and {plot_path}")


def print_peer(console, peer: dict) -> None:
    from rich.table import Table

    table = Table(title="ours / llama.cpp (same checkpoint, same run; best repeat of each, ours the best form)")
    for col in ("", "ours tok/s", "ours: form", "llama.cpp tok/s", "ratio"):
        table.add_column(col)
    forms = peer.get("ours_backend", {})
    for row, r in peer["ratios"].items():
        def fmt(v):
            return "-" if v is None else f"{v:.1f}"
        if r["ours"] is None and r["llama_cpp"] is None:
            continue
        table.add_row(f"{row} ({r['llama_cpp_type']})", fmt(r["ours"]), forms.get(row, "-"), fmt(r["llama_cpp"]),
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}")
    console.print(table)
    for gtype, reason in peer.get("skipped", {}).items():
        console.print(f"llama.cpp {gtype}: not converted or measured ({reason})")
    f32 = peer["logits"]["fp32"]
    if f32.get("checked"):
        console.print(f"llama.cpp f32 logits vs the reference: {f32['relative_error']:.1e} "
                      f"({'within' if f32['passed'] else 'OUTSIDE'} {f32['tolerance']:.0e})")
    else:
        console.print(f"llama.cpp logits: {f32['reason']}")


@app.command("bench-cpu-kernels")
def bench_cpu_kernels(
    preset: Annotated[str, typer.Option(help="Model preset (random weights).")] = "small",
    dtypes: Annotated[str, typer.Option(help="Expert dtypes, comma-separated.")] = "fp32,bf16,int8,int4",
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads.")] = 2,
    rounds: Annotated[int, typer.Option(help="Alternating rounds (best and median reported).")] = 5,
    json_path: Annotated[Path, typer.Option("--json", help="Write the results here.")] = Path("bench-cpu-kernels.json"),
    workdir: Annotated[Path, typer.Option(help="Cache for the checkpoint, exports and engines.")] = Path("bench-out"),
    baseline: Annotated[str, typer.Option(help="ort (ONNX Runtime's kernels throughout) | ort-linears (ours, with "
                                          "the LM head and projections on ONNX Runtime's: our linears alone).")
                        ] = "ort",
    linears: Annotated[str | None, typer.Option(help="Our engine's --cpu-linears (default: the build's).")] = None,
) -> None:
    """Our CPU kernels against ONNX Runtime's, alternating on the same machine: decode at batch 1 and 8, prefill."""
    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.bench.cpu_kernels import BASELINES, DTYPES, compare

    chosen = _chosen(dtypes, DTYPES, "--dtypes")
    if baseline not in BASELINES:
        raise MixtralTrtError(f"--baseline {baseline!r}: choose one of {', '.join(BASELINES)}")
    _check_counts(rounds, threads)
    cpu_kernels.require_library()
    with make_progress(transient=True) as progress:
        result = compare(workdir, preset, chosen, threads, rounds, progress=progress, linears=linears,
                         baseline=baseline)
    with atomic_file(json_path) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    s = result["settings"]
    table = Table(title=f"our CPU kernels vs ONNX Runtime's: {preset}, {threads} threads, {rounds} rounds alternating "
                        f"(ms, best / median; load average {result['load_average'][0]:.1f})")
    for col in ("experts", "measure", "ours", baseline, "speed-up best / median"):
        table.add_column(col)
    for dtype, row in result["results"].items():
        for measure in row["speedup"]:
            ours, ort, up = row["ours"][measure], row["ort"][measure], row["speedup"][measure]
            label = {"decode_b1": f"decode b1 @{s['context']}", "prefill": f"prefill {s['prefill']}"}.get(
                measure, f"decode b{s['batch']} @{s['context']}")
            table.add_row(f"{dtype} (ort: {row['ort_engine']})" if dtype == "bf16" else dtype, label,
                          f"{ours['best_ms']:.2f} / {ours['median_ms']:.2f}",
                          f"{ort['best_ms']:.2f} / {ort['median_ms']:.2f}",
                          f"{up['best']:.2f}x / {up['median']:.2f}x")
        gain = row["batch_gain"]
        table.add_row("", f"batch {s['batch']} / batch 1 tok/s",
                      *(f"{gain[k]['best']:.2f}x / {gain[k]['median']:.2f}x" for k in ("ours", "ort")), "")
    Console().print(table)


@app.command("bench-cpu-linears")
def bench_cpu_linears(
    preset: Annotated[str, typer.Option(help="Model preset: the linears' shapes.")] = "small",
    formats: Annotated[str, typer.Option(help="Weight formats, comma-separated.")] = "fp32,bf16,int8,int4",
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads.")] = 2,
    rounds: Annotated[int, typer.Option(help="Alternating rounds (best and median reported).")] = 30,
    rows: Annotated[str, typer.Option(help="Rows of x (T), comma-separated.")] = "1,8,512",
    json_path: Annotated[Path, typer.Option("--json", help="Write the results here.")] = Path("bench-cpu-linears.json"),
) -> None:
    """Our linear ops against ONNX Runtime's MatMul / MatMulNBits, one node each, alternating."""
    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.bench.cpu_linears import FORMATS, compare_linears

    chosen = _chosen(formats, FORMATS, "--formats")
    _check_counts(rounds, threads)
    counts = _items(rows)
    if not counts or not all(r.isdigit() for r in counts):
        raise MixtralTrtError(f"--rows {rows!r}: comma-separated row counts (0 or more)")
    cpu_kernels.require_library()
    with make_progress(transient=True) as progress:
        result = compare_linears(preset, chosen, threads, rounds, tuple(int(r) for r in counts),
                                 progress=progress)
    with atomic_file(json_path) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"our linears vs ONNX Runtime's: {preset}, {threads} threads, {rounds} rounds alternating "
                        f"(ms per call, best / median; load average {result['load_average'][0]:.1f})")
    for col in ("linear", "ours", "ort", "speed-up best / median"):
        table.add_column(col)
    for name, row in result["results"].items():
        ours, ort, up = row["ours"], row["ort"], row["speedup"]
        table.add_row(name, f"{ours['best_ms']:.3f} / {ours['median_ms']:.3f}",
                      f"{ort['best_ms']:.3f} / {ort['median_ms']:.3f}", f"{up['best']:.2f}x / {up['median']:.2f}x")
    Console().print(table)
