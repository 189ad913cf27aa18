"""The Scheduler's prefix cache and chunked prefill, measured on a preset's random engine (no server).

- `second_turn_ttft`: time to first token of a chat's second turn whose prompt repeats a `prefix`-token first
  turn (and its reply), with the prefix cache off and on (best of `repeats`, a fresh Scheduler each time, so
  the only stored blocks are the first turn's).
- `join_latency`: `rows` requests decode while a `long`-token prompt joins; the running rows' gaps between
  tokens (p50 / p99 / max) from the newcomer's submission until it has its first token, per `prefill_chunk`
  (None: the whole prompt in one step), against their steady step before it arrived.

Figures on a shared machine vary with other people's jobs: compare rows of one run.

    python -m mixtral_trt.bench.scheduler_load --preset small --workdir bench-out
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.runtime.sampling import SamplingParams
from mixtral_trt.runtime.scheduler import Scheduler

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


def join_latency(engine: Engine, chunks: tuple[int | None, ...] = (None, 512, 256, 128, 64, 32), rows: int = 3,
                 long: int = 2048) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    long_prompt = [1, *rng.integers(3, engine.config.vocab_size, long - 1).tolist()]
    results = []
    for chunk in chunks:
        sched = Scheduler(engine, prefix_cache_gb=0, prefill_chunk=chunk)
        stamps: list[list[float]] = [[] for _ in range(rows)]
        for r in range(rows):
            sched.submit([1, *rng.integers(3, engine.config.vocab_size, 16).tolist()],
                         SamplingParams(max_new_tokens=engine.max_seq - 64, ignore_eos=True),
                         on_event=lambda e, mine=stamps[r]: mine.append(time.perf_counter()))
        for _ in range(12):  # steady state
            sched.step()
        steady = float(np.median(np.diff(stamps[0][-8:])))
        start = time.perf_counter()
        newcomer = sched.submit(long_prompt, SamplingParams(max_new_tokens=2, ignore_eos=True))
        while not newcomer.reply.token_ids:
            sched.step()
        gaps = np.concatenate([_gaps_since(s, start) for s in stamps])
        for r in sched._running + sched._prefilling:  # noqa: SLF001 - the benchmark stops its own requests
            r.cancel()
        sched.run_until_idle()
        results.append({"prefill_chunk": chunk, "steady_step_ms": 1e3 * steady,
                        "gap_p50_ms": 1e3 * float(np.percentile(gaps, 50)),
                        "gap_p99_ms": 1e3 * float(np.percentile(gaps, 99)), "gap_max_ms": 1e3 * float(gaps.max()),
                        "p99_over_steady": float(np.percentile(gaps, 99)) / steady,
                        "newcomer_ttft_s": newcomer.first_token_at - newcomer.submitted})
    return results


def _gaps_since(stamps: list[float], start: float) -> np.ndarray:
    """Gaps between a row's tokens from its last token before `start` on."""
    before = [t for t in stamps if t < start]
    return np.diff(before[-1:] + [t for t in stamps if t >= start])


def main(argv: list[str] | None = None) -> None:
    from .serve_load import ServeBenchSettings, serve_engine_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--prefix", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    s = ServeBenchSettings(preset=args.preset, clients=(4,), max_seq=args.prefix + 512, workdir=args.workdir)
    engine = runtime.load(serve_engine_dir(s), verify=False)
    figures = {"engine": str(engine.path), "second_turn": second_turn_ttft(engine, args.prefix),
               "join": join_latency(engine, long=args.prefix)}
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out is not None:
        with atomic_file(args.out) as f:
            f.write(text)


if __name__ == "__main__":
    main()
