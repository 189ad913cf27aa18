"""Mixed steps: the running rows' decode tokens and a joining prompt's chunk in ONE engine call, against today's
Scheduler, which runs a decode step and a separate call for the chunk (runtime/scheduler.py). On a preset's random
`ort` engine and the same engine's graph with ragged attention (exporter/lowering/ragged.py, runtime/ragged.py).

- `call_costs`: one step at a joining prompt's past of `past` tokens, per chunk size T (interleaved medians): the
  rows' decode step alone (their steady step), decode step + chunk call (today), one padded call (every row padded
  to T new tokens, masked: what the canonical graph takes as it is, (B + 1) * T tokens) and one ragged call (the
  B + T tokens packed as batch 1), and where the engine runs our CPU kernels the same ragged call on `build
  --ragged`'s engine, each layer's attention core their RaggedAttention (lowering/ragged_attention.py: "op_ms").
- `join_ragged`: `rows` rows decode in one PackedCache while a `long`-token prompt joins beside them in chunks of
  T, one ragged call per step: the rows' gaps between tokens (p50 / p99 / max) against their steady step, and the
  newcomer's time to first token: the figures scheduler_load's join_latency gives for today's Scheduler, which
  `join_compare` runs alternately with it (a shared machine's load then falls on both alike).

    python -m mixtral_trt.bench.mixed_step --preset small --workdir bench-out [--pasts 256,1024,2000 --no-join]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.lowering.ragged import write_ragged
from mixtral_trt.runtime.backends.ort import OrtRunner, custom_ops_hook
from mixtral_trt.runtime.kv_cache import KVCache
from mixtral_trt.runtime.ragged import PackedCache, RaggedRow

from .scheduler_load import emit, join_engine, join_once, join_settings
from .serve_load import serve_onnx_dir

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine


def ragged_runner(engine: Engine, workdir: Path, threads: int | None = None) -> OrtRunner:
    """The engine's graph with ragged attention, written once under `workdir` (weights hard-linked), opened with the
    engine's own copy of our CPU kernels' library where its MoE layers run on them: the canonical graph's attention
    (write_ragged), whatever the engine's kernels."""
    path = workdir / f"{engine.path.name}-ragged" / "model.onnx"
    if not path.is_file():
        write_ragged(engine.path, path.parent)
    return OrtRunner(path, device=engine.runner.device, threads=threads,
                     session_options_hook=custom_ops_hook(engine.manifest, engine.path))


def op_runner(engine: Engine, onnx_dir: Path, workdir: Path, threads: int | None = None) -> OrtRunner | None:
    """`build --ragged` of the engine's export, built once under `workdir`: with our CPU kernels each layer's
    attention core is their RaggedAttention (exporter/lowering/ragged_attention.py). None where the engine does
    not run our kernels (nor would that build)."""
    if "cpu_kernels" not in engine.manifest.backend_info:
        return None
    path = workdir / f"{engine.path.name}-ragged-op"
    if not path.exists():
        build_engine(onnx_dir, path, "ort", ragged=True)
    built = runtime.load(path, verify=False)
    return OrtRunner(path / built.manifest.model_file, device=engine.runner.device, threads=threads,
                     session_options_hook=custom_ops_hook(built.manifest, path))


def call_costs(engine: Engine, runner: OrtRunner, past: int = 1024, chunks: tuple[int, ...] = (4, 16, 32, 64),
               rows: int = 3, row_past: int = 40, repeats: int = 7, op_runner: OrtRunner | None = None,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Milliseconds per call (medians of `repeats` interleaved rounds) and each against the steady step; with
    `op_runner` (op_runner's `build --ragged` engine) its ragged call too, interleaved with the others ("op_ms").
    `clock`: wall time, or time.process_time (CPU time: with one intra-op thread, the work, whatever the load)."""
    rng = np.random.default_rng(0)
    vocab = engine.config.vocab_size
    _, running = engine.forward(rng.integers(3, vocab, (rows, row_past)))
    _, joining = engine.forward(rng.integers(3, vocab, (1, past)))
    running, joining = running.editable(), joining.editable()
    both = KVCache.concat([running, joining])  # the padded call's batch: rows, then the joining prompt
    kv = [running.row_kv(r) for r in range(rows)] + [joining.row_kv(0)]

    def padded(t: int) -> Callable[[], Any]:
        mask = np.concatenate([both.attention_mask, np.zeros((rows + 1, t), np.int64)], axis=1)  # [B + 1, P + T]
        mask[:rows, -1] = 1  # a decode row's token is its last new slot; the others are masked
        mask[rows, -t:] = 1
        positions = both.lengths[:, None] + np.zeros((1, t), np.int64)  # [B + 1, T]
        positions[rows] += np.arange(t)
        return lambda: engine.forward(rng.integers(3, vocab, (rows + 1, t)), both, mask, positions)

    def ragged(t: int, runner: OrtRunner = runner) -> Callable[[], Any]:
        def call() -> Any:
            ids = [[int(i)] for i in rng.integers(3, vocab, rows)] + [rng.integers(3, vocab, t).tolist()]
            cache = PackedCache.from_rows([RaggedRow(k, v, i) for (k, v), i in zip(kv, ids, strict=True)])
            feeds, _, _ = cache.feeds(engine.contract, ids)
            return runner.run(feeds, ["logits"])
        return call

    calls: dict[str, Callable[[], Any]] = {"decode": lambda: engine.forward(rng.integers(3, vocab, (rows, 1)), running)}
    for t in chunks:
        calls[f"chunk{t}"] = lambda t=t: engine.forward(rng.integers(3, vocab, (1, t)), joining)
        calls[f"padded{t}"], calls[f"ragged{t}"] = padded(t), ragged(t)
        if op_runner is not None:
            calls[f"op{t}"] = ragged(t, op_runner)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    steady = ms["decode"]
    out: dict[str, Any] = {"past": past, "rows": rows, "steady_step_ms": steady, "chunks": []}
    for t in chunks:
        separate = steady + ms[f"chunk{t}"]
        out["chunks"].append({"chunk": t, "chunk_call_ms": ms[f"chunk{t}"], "separate_ms": separate,
                              "padded_ms": ms[f"padded{t}"], "ragged_ms": ms[f"ragged{t}"],
                              "separate_over_steady": separate / steady,
                              "padded_over_steady": ms[f"padded{t}"] / steady,
                              "ragged_over_steady": ms[f"ragged{t}"] / steady})
        if op_runner is not None:
            out["chunks"][-1].update(op_ms=ms[f"op{t}"], op_over_steady=ms[f"op{t}"] / steady)
    return out


def join_ragged(engine: Engine, runner: OrtRunner, chunk: int, rows: int, long_prompt: list[int],
                rng: np.random.Generator) -> dict[str, Any]:
    """`rows` greedy rows in one PackedCache; a prompt joins in chunks of `chunk` beside their decode tokens."""
    contract = engine.contract
    names = contract.names("present_key") + contract.names("present_value")
    state = {"cache": PackedCache.empty(contract, rows)}

    def call(new: list[list[int]]) -> list[int]:  # each row's greedy next token (rows that fed tokens)
        feeds, owner, pos = state["cache"].feeds(contract, new)
        out = runner.run(feeds, ["logits", *names])
        state["cache"] = state["cache"].advanced(contract, out, owner, pos)
        logits = out["logits"][0]  # [N, V]
        return [int(logits[owner == r][-1].argmax()) for r in range(len(new)) if new[r]]

    tokens = call([[1, *rng.integers(3, engine.config.vocab_size, 16).tolist()] for _ in range(rows)])
    stamps = []
    for _ in range(12):  # steady state
        tokens = call([[t] for t in tokens])
        stamps.append(time.perf_counter())
    steady = float(np.median(np.diff(stamps[-9:])))
    state["cache"] = state["cache"].with_rows(1)
    start = last = stamps[-1]
    gaps, done, calls = [], 0, 0
    while done < len(long_prompt):
        n = min(chunk, len(long_prompt) - done)
        tokens = call([[t] for t in tokens] + [long_prompt[done : done + n]])[:rows]
        done += n
        calls += 1
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    g = np.asarray(gaps)
    return {"steady_step_ms": 1e3 * steady, "gap_p50_ms": 1e3 * float(np.percentile(g, 50)),
            "gap_p99_ms": 1e3 * float(np.percentile(g, 99)), "gap_max_ms": 1e3 * float(g.max()),
            "p99_over_steady": float(np.percentile(g, 99)) / steady, "newcomer_ttft_s": last - start, "chunks": calls}


def join_compare(engine: Engine, runner: OrtRunner, chunks: tuple[int, ...] = (16, 32, 64),
                 today: tuple[int | str, ...] = (256, 16), rows: int = 3, long: int = 2048, repeats: int = 2,
                 progress: Callable[[dict[str, Any]], None] | None = None,
                 op_runner: OrtRunner | None = None) -> list[dict[str, Any]]:
    """Alternating runs: today's Scheduler at each `today` prefill_chunk, the ragged mixed step at each `chunks`
    (mode "ragged"; with `op_runner`, mode "ragged-op" on it too); per configuration the best (lowest p99 ratio)
    run and, with `repeats` > 1, the median of each figure."""
    rng = np.random.default_rng(1)
    long_prompt = [1, *rng.integers(3, engine.config.vocab_size, long - 1).tolist()]
    configs = [("scheduler", c) for c in today] + [("ragged", c) for c in chunks]
    if op_runner is not None:
        configs += [("ragged-op", c) for c in chunks]
    runs: dict[tuple[str, int | str], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(repeats):
        for mode, chunk in configs:
            if mode == "scheduler":
                got = join_once(engine, chunk, rows, long_prompt, rng)
                got = {k: v for k, v in got.items() if k != "chunk_sizes"}
            else:
                got = join_ragged(engine, op_runner if mode == "ragged-op" else runner, int(chunk), rows,
                                  long_prompt, rng)
            runs[(mode, chunk)].append(got)
            if progress is not None:
                progress({"mode": mode, "chunk": chunk, **got})
    results = []
    for (mode, chunk), measured in runs.items():
        best = min(measured, key=lambda r: r["p99_over_steady"])
        row = {"mode": mode, "chunk": chunk, **best, "runs": len(measured)}
        if len(measured) > 1:
            row["median"] = {k: float(np.median([r[k] for r in measured])) for k in best}
        results.append(row)
    return results


def _log(run: dict[str, Any]) -> None:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}), file=sys.stderr,
          flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--prefix", type=int, default=2048, help="the joining prompt's tokens")
    ap.add_argument("--chunks", default="16,32,64", help="ragged mixed steps' chunk sizes")
    ap.add_argument("--today", default="256,16", help="today's Scheduler's prefill_chunk values to run beside them")
    ap.add_argument("--cost-chunks", default="4,16,32,64", help="chunk sizes of the per-call costs")
    ap.add_argument("--pasts", default=None, help="the joining prompt's pasts of the per-call costs (comma-"
                    "separated; default half of --prefix)")
    ap.add_argument("--no-join", action="store_true", help="per-call costs only")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of every session (default: all)")
    ap.add_argument("--cpu-time", action="store_true", help="per-call costs in CPU time (with --threads 1: the "
                    "work, whatever the machine's load)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    engine = join_engine(args.preset, args.workdir, args.prefix)
    if args.threads is not None:
        engine.runner = OrtRunner(engine.path / engine.manifest.model_file, device=engine.runner.device,
                                  threads=args.threads, session_options_hook=custom_ops_hook(engine.manifest,
                                                                                             engine.path))
    runner = ragged_runner(engine, args.workdir, args.threads)
    op = op_runner(engine, serve_onnx_dir(join_settings(args.preset, args.workdir, args.prefix)), args.workdir,
                   args.threads)
    figures: dict[str, Any] = {"engine": str(engine.path), "call_costs": []}
    pasts = [int(p) for p in args.pasts.split(",")] if args.pasts else [args.prefix // 2]
    cost_chunks = tuple(int(c) for c in args.cost_chunks.split(","))
    for past in pasts:
        figures["call_costs"].append(call_costs(engine, runner, past, cost_chunks, repeats=args.repeats * 4 - 1,
                                                op_runner=op, clock=time.process_time if args.cpu_time
                                                else time.perf_counter))
        _log({"call_costs": figures["call_costs"][-1]})
    today = tuple(c if c == "auto" else int(c) for c in args.today.split(","))
    if not args.no_join:
        figures["join"] = join_compare(engine, runner, tuple(int(c) for c in args.chunks.split(",")), today,
                                       long=args.prefix, repeats=args.repeats, progress=_log, op_runner=op)
    emit(figures, args.out)


if __name__ == "__main__":
    main()
