"""`mixtral-export serve-bench`: N concurrent clients against `mixtral-export serve` on a preset's random
checkpoint; tokens/s and latency percentiles per N, as JSON and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.bench.serve_plot import gap_ms, save_serve_plot
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.common.progress import make_progress

from .app import app


@app.command("serve-bench")
def serve_bench(
    preset: Annotated[str, typer.Option(help="Model preset (random weights).")] = "small",
    clients: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent clients.")] = "1,4,8,16",
    rounds: Annotated[int, typer.Option(help="Requests per client, one after another.")] = 3,
    max_tokens: Annotated[int, typer.Option(help="Tokens generated per request.")] = 64,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the requests (seeded).")] = 1.0,
    repeats: Annotated[int, typer.Option(help="Interleaved runs per client count; the best is reported.")] = 2,
    max_seq: Annotated[int, typer.Option(help="Context of the engine built for the benchmark.")] = 512,
    json_path: Annotated[Path, typer.Option("--json", help="Write the results here.")] = Path("serve-bench.json"),
    plot: Annotated[Path | None, typer.Option(help="Write the PNG here (default: beside the JSON).")] = None,
    workdir: Annotated[Path, typer.Option(help="Cache for the checkpoint, export and engine.")] = Path("bench-out"),
    threads: Annotated[int | None, typer.Option(help="Server CPU threads (default: all cores).")] = None,
    quantize: Annotated[str | None, typer.Option(help="Serve a weight-only quantized engine: int8 or int4.")] = None,
    multi_turn: Annotated[int, typer.Option(help="Also time a chat's second turn after a first turn of this many "
                                            "tokens, with the prefix cache off and on (0: skip; needs --max-seq "
                                            "above it).")] = 0,
) -> None:
    """Throughput and latency of the HTTP server with 1..N concurrent streaming clients."""
    from rich.console import Console
    from rich.table import Table

    from mixtral_trt.bench.serve_load import ServeBenchSettings, run_serve_bench
    from mixtral_trt.bench.serve_multiturn import multi_turn as run_multi_turn

    try:
        counts = tuple(int(c) for c in clients.split(",") if c.strip())
    except ValueError:
        raise MixtralTrtError(f"--clients {clients!r}: expected comma-separated integers") from None
    settings = ServeBenchSettings(preset=preset, clients=counts, rounds=rounds, max_tokens=max_tokens,
                                  temperature=temperature, repeats=repeats, max_seq=max_seq, workdir=workdir,
                                  threads=threads, quantize=quantize, multi_turn=multi_turn)
    with make_progress(transient=True) as progress:
        result = run_serve_bench(settings, progress)
        if multi_turn:
            result["multi_turn"] = run_multi_turn(Path(result["engine_dir"]), settings, progress)
    with atomic_file(json_path) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    plot_path = save_serve_plot(result, plot or json_path.with_suffix(".png"))
    table = Table(title=f"serve-bench: preset {preset} {quantize or 'fp32'}, {max_tokens} tokens per request, "
                        f"{result['settings']['threads']} threads")
    for col in ("clients", "tokens/s", "vs 1 client", "engine alone", "latency p50 / p90 s", "TTFT p50 / p90 s",
                "token gap p50 ms"):
        table.add_column(col)
    for n, r in result["best"].items():
        table.add_row(n, f"{r['tokens_per_s']:.1f}", f"{result['speedup'][n]:.2f}x",
                      f"{result['engine_alone_tokens_per_s'][n]:.1f}",
                      f"{r['latency_s']['p50']:.2f} / {r['latency_s']['p90']:.2f}",
                      f"{r['ttft_s']['p50']:.3f} / {r['ttft_s']['p90']:.3f}", gap_ms(r, digits=1))
    console = Console()
    console.print(table)
    if "multi_turn" in result:
        m = result["multi_turn"]
        console.print(f"multi-turn, {m['prefix_tokens']}-token first turn: second-turn TTFT "
                      f"{m['without_cache']['second_turn_ttft_s']:.3f} s without the prefix cache, "
                      f"{m['with_cache']['second_turn_ttft_s']:.3f} s with it ({m['second_turn_speedup']:.1f}x)")
    if "targets" in result:
        console.print(f"targets: {result['targets']}")
    console.print(f"wrote {json_path} and {plot_path}")
