"""The Scheduler's prefix cache and chunked prefill, measured on a preset's random engine (no server).

- `second_turn_ttft`: time to first token of a chat's second turn whose prompt repeats a `prefix`-token first
  turn (and its reply), with the prefix cache off and on (best of `repeats`, a fresh Scheduler each time, so
  the only stored blocks are the first turn's).
- `join_latency`: `rows` requests decode while a `long`-token prompt joins; the running rows' gaps between
  tokens (p50 / p99 / max) from the newcomer's submission until it has its first token, per `prefill_chunk`
  (None: the whole prompt in one step; "auto": sized from measured step times), against their steady step (the
  median of 8 steps before it arrived and 8 after its first token: a shared machine's load swings); with
  `repeats`, the chunk sizes alternate and the best and median runs are kept.

Figures on a shared machine vary with other people's jobs: compare rows of one run.

    python -m mixtral_trt.bench.scheduler_load --preset small --workdir bench-out
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
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import AUTO, Scheduler

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine


def second_turn_ttft(engine: Engine, prefix: int = 2048, question: int = 24, reply: int = 16,
                     repeats: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    first = [1, *rng.integers(3, engine.config.vocab_size, prefix - 1).tolist()]
    follow_up = rng.integers(3, engine.config.vocab_size, question).tolist()
    params = SamplingParams(max_new_tokens=reply, ignore_eos=True)
    out: dict[str, Any] = {"prefix_tokens": prefix}
    for name, gb in (("without_cache_s", 0), ("with_cache_s", 0.5)):
        best = float("inf")
        for _ in range(repeats):
            sched = Scheduler(engine, prefix_cache_gb=gb, prefill_chunk=None)
            turn1 = sched.submit(first, params)
            sched.run_until_idle()
            second = first + turn1.completion().token_ids + follow_up
            turn2 = sched.submit(second, SamplingParams(max_new_tokens=1))
            sched.run_until_idle()
            best = min(best, turn2.first_token_at - turn2.submitted)
            if gb:
                out["cached_tokens"] = sched.stats.cached_prompt_tokens
        out[name] = best
    out["second_turn_tokens"] = len(second)
    out["speedup"] = out["without_cache_s"] / out["with_cache_s"]
    return out


def join_latency(engine: Engine, chunks: tuple[int | str | None, ...] = (None, 256, 128, 64, 32, 16, AUTO),
                 rows: int = 3, long: int = 2048, repeats: int = 1,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One row per `prefill_chunk`; with `repeats` > 1 the chunk sizes alternate, each measured `repeats`
    times, and the row holds the best (lowest p99 ratio) and the median of each figure. `progress` gets each
    run's figures as it ends."""
    rng = np.random.default_rng(1)
    long_prompt = [1, *rng.integers(3, engine.config.vocab_size, long - 1).tolist()]
    runs: dict[int | str | None, list[dict[str, Any]]] = {c: [] for c in chunks}
    for _ in range(repeats):
        for chunk in chunks:
            runs[chunk].append(join_once(engine, chunk, rows, long_prompt, rng))
            if progress is not None:
                progress({"prefill_chunk": chunk, **runs[chunk][-1]})
    results = []
    for chunk, measured in runs.items():
        best = min(measured, key=lambda r: r["p99_over_steady"])
        row = {"prefill_chunk": chunk, **best, "runs": len(measured)}
        if len(measured) > 1:
            row["median"] = {k: float(np.median([r[k] for r in measured])) for k in best if k != "chunk_sizes"}
        results.append(row)
    return results


def join_once(engine: Engine, chunk: int | str | None, rows: int, long_prompt: list[int],
               rng: np.random.Generator) -> dict[str, Any]:
    sched = Scheduler(engine, prefix_cache_gb=0, prefill_chunk=chunk)
    stamps: list[list[float]] = [[] for _ in range(rows)]
    for r in range(rows):
        sched.submit([1, *rng.integers(3, engine.config.vocab_size, 16).tolist()],
                     SamplingParams(max_new_tokens=engine.max_seq - 64, ignore_eos=True),
                     on_event=lambda e, mine=stamps[r]: mine.append(time.perf_counter()))
    for _ in range(12):  # steady state
        sched.step()
    before = np.diff(stamps[0][-9:])
    start = time.perf_counter()
    newcomer = sched.submit(long_prompt, SamplingParams(max_new_tokens=2, ignore_eos=True))
    sizes = []
    while not newcomer.reply.token_ids:
        sizes.append(sched.chunk_budget())  # the prompt tokens this step may compute
        sched.step()
    gaps = np.concatenate([_gaps_since(s, start) for s in stamps])
    joined = time.perf_counter()
    for _ in range(10):  # steady again (the newcomer's second token, then the rows alone)
        sched.step()
    after = np.diff([t for t in stamps[0] if t >= joined][-9:])
    steady = float(np.median(np.concatenate([before, after])))  # 8 steps before, 8 after: a shared machine's load
    for r in sched._running + sched._prefilling:  # noqa: SLF001 - the benchmark stops its own requests
        r.cancel()
    sched.run_until_idle()
    return {"steady_step_ms": 1e3 * steady, "steady_before_ms": 1e3 * float(np.median(before)),
            "steady_after_ms": 1e3 * float(np.median(after)), "gap_p50_ms": 1e3 * float(np.percentile(gaps, 50)),
            "gap_p99_ms": 1e3 * float(np.percentile(gaps, 99)), "gap_max_ms": 1e3 * float(gaps.max()),
            "p99_over_steady": float(np.percentile(gaps, 99)) / steady,
            "newcomer_ttft_s": newcomer.first_token_at - newcomer.submitted,
            "chunks": sched.stats.prefill_chunks, "chunk_sizes": sizes}


def _log(run: dict[str, Any]) -> None:
    brief = {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items() if k != "chunk_sizes"}
    print(json.dumps(brief), file=sys.stderr, flush=True)


def _gaps_since(stamps: list[float], start: float) -> np.ndarray:
    """Gaps between a row's tokens from its last token before `start` on."""
    before = [t for t in stamps if t < start]
    return np.diff(before[-1:] + [t for t in stamps if t >= start])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--prefix", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--chunks", default="none,256,128,64,32,16,auto",
                    help="prefill_chunk values to compare (none: whole prompts; auto: from step times)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of every chunk size")
    ap.add_argument("--skip-second-turn", action="store_true")
    args = ap.parse_args(argv)
    chunks = tuple(None if c == "none" else c if c == AUTO else int(c) for c in args.chunks.split(","))
    engine = join_engine(args.preset, args.workdir, args.prefix)
    figures: dict[str, Any] = {"engine": str(engine.path)}
    if not args.skip_second_turn:
        figures["second_turn"] = second_turn_ttft(engine, args.prefix)
    figures["join"] = join_latency(engine, chunks, long=args.prefix, repeats=args.repeats, progress=_log)
    emit(figures, args.out)


def join_engine(preset: str, workdir: Path, prefix: int, ragged: bool = False) -> Engine:
    """The preset's random `ort` engine (max batch 4) with room for a `prefix`-token prompt and 512 more tokens
    (`ragged`: the same export built --ragged, where the Scheduler runs mixed steps)."""
    from .serve_load import serve_engine_dir

    return runtime.load(serve_engine_dir(join_settings(preset, workdir, prefix), ragged=ragged), verify=False)


def join_settings(preset: str, workdir: Path, prefix: int):
    """join_engine's serve_load settings (its export: serve_load.serve_onnx_dir)."""
    from .serve_load import ServeBenchSettings

    return ServeBenchSettings(preset=preset, clients=(4,), max_seq=prefix + 512, workdir=workdir)


def emit(figures: dict[str, Any], out: Path | None) -> None:
    """Print the figures as JSON, and write them to `out` when given."""
    text = json.dumps(figures, indent=1)
    print(text)
    if out is not None:
        with atomic_file(out) as f:
            f.write(text)


if __name__ == "__main__":
    main()
