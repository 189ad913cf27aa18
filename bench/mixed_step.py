"""Mixed steps: the running rows' decode tokens and a joining prompt's chunk in ONE engine call (the Scheduler on a
`build --ragged` engine, runtime/mixed_step.py), against today's Scheduler on the same export without --ragged,
which runs a decode step and a separate call for the chunk (runtime/scheduler.py). On a preset's random `ort`
engine and the same export built --ragged.

- `call_costs`: one step at a joining prompt's past of `past` tokens, per chunk size T (interleaved medians): the
  rows' decode step alone (their steady step; and the same rows packed, the mixed steps' steady step), decode step
  + chunk call (today), one padded call (every row padded to T new tokens, masked: what the canonical graph takes
  as it is, (B + 1) * T tokens) and one ragged call (the B + T tokens packed as batch 1, the cache packed once).
- `join_compare`: `rows` rows decode while a `long`-token prompt joins, the Scheduler itself (scheduler_load's
  join_once) on both engines, alternating (a shared machine's load then falls on both alike): the rows' gaps between
  tokens (p50 / p99 / max) against their steady step, the newcomer's time to first token, the load average.

    python -m mixtral_trt.bench.mixed_step --preset small --workdir bench-out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt.runtime.kv_cache import KVCache
from mixtral_trt.runtime.ragged import PackedCache, RaggedRow

from .scheduler_load import emit, join_engine, join_once

if TYPE_CHECKING:
    from mixtral_trt.runtime.engine import Engine


def call_costs(engine: Engine, ragged: Engine, past: int = 1024, chunks: tuple[int, ...] = (4, 16, 32, 64),
               rows: int = 3, row_past: int = 40, repeats: int = 7) -> dict[str, Any]:
    """Milliseconds per call (medians of `repeats` interleaved rounds) and each against the steady step."""
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

    def packed(t: int) -> Callable[[], Any]:  # t = 0: the rows alone (the mixed steps' steady step)
        held = kv if t else kv[:rows]
        cache = PackedCache.from_rows([RaggedRow(k, v, [0]) for k, v in held])  # packed once, as the Scheduler holds it

        def call() -> Any:
            ids = [[int(i)] for i in rng.integers(3, vocab, rows)] + ([rng.integers(3, vocab, t).tolist()] if t else [])
            feeds, _, _ = cache.feeds(engine.contract, ids)
            return ragged.runner.run(feeds, ["logits"])
        return call

    calls: dict[str, Callable[[], Any]] = {"decode": lambda: engine.forward(rng.integers(3, vocab, (rows, 1)), running),
                                           "ragged0": packed(0)}
    for t in chunks:
        calls[f"chunk{t}"] = lambda t=t: engine.forward(rng.integers(3, vocab, (1, t)), joining)
        calls[f"padded{t}"], calls[f"ragged{t}"] = padded(t), packed(t)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    steady = ms["decode"]
    out: dict[str, Any] = {"past": past, "rows": rows, "steady_step_ms": steady, "ragged_steady_ms": ms["ragged0"],
                           "ragged_steady_over_steady": ms["ragged0"] / steady, "chunks": []}
    for t in chunks:
        separate = steady + ms[f"chunk{t}"]
        out["chunks"].append({"chunk": t, "chunk_call_ms": ms[f"chunk{t}"], "separate_ms": separate,
                              "padded_ms": ms[f"padded{t}"], "ragged_ms": ms[f"ragged{t}"],
                              "separate_over_steady": separate / steady,
                              "padded_over_steady": ms[f"padded{t}"] / steady,
                              "ragged_over_steady": ms[f"ragged{t}"] / steady})
    return out


def join_compare(engine: Engine, ragged: Engine, chunks: tuple[int | str, ...] = (16, 32, 64),
                 today: tuple[int | str, ...] = (256, 16), rows: int = 3, long: int = 2048, repeats: int = 2,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Alternating runs of the Scheduler (scheduler_load's join_once): today's path on `engine` at each `today`
    prefill_chunk, its mixed steps on `ragged` (the same export built --ragged) at each of `chunks`; per
    configuration the best (lowest p99 ratio) run and, with `repeats` > 1, the median of each figure."""
    rng = np.random.default_rng(1)
    long_prompt = [1, *rng.integers(3, engine.config.vocab_size, long - 1).tolist()]
    configs = [("today", c) for c in today] + [("mixed", c) for c in chunks]
    runs: dict[tuple[str, int | str], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(repeats):
        for mode, chunk in configs:
            got = join_once(engine if mode == "today" else ragged, chunk, rows, long_prompt, rng)
            got = {k: v for k, v in got.items() if k != "chunk_sizes"}
            runs[(mode, chunk)].append({**got, "load": os.getloadavg()[0]})
            if progress is not None:
                progress({"mode": mode, "chunk": chunk, **runs[(mode, chunk)][-1]})
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


def _chunks(text: str) -> tuple[int | str, ...]:
    return tuple(c if c == "auto" else int(c) for c in text.split(","))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--prefix", type=int, default=2048, help="the joining prompt's tokens")
    ap.add_argument("--chunks", default="8,16,32,64", help="the Scheduler's prefill_chunk values on the ragged engine")
    ap.add_argument("--today", default="256,16", help="today's Scheduler's prefill_chunk values to run beside them")
    ap.add_argument("--cost-chunks", default="4,16,32,64", help="chunk sizes of the per-call costs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    engine = join_engine(args.preset, args.workdir, args.prefix)
    ragged = join_engine(args.preset, args.workdir, args.prefix, ragged=True)
    figures: dict[str, Any] = {"engine": str(engine.path), "ragged_engine": str(ragged.path),
                               "load_before": os.getloadavg()}
    figures["call_costs"] = call_costs(engine, ragged, args.prefix // 2,
                                       tuple(int(c) for c in args.cost_chunks.split(",")))
    _log({"call_costs": figures["call_costs"]})
    figures["call_costs"]["load"] = os.getloadavg()[0]
    figures["join"] = join_compare(engine, ragged, _chunks(args.chunks), _chunks(args.today), long=args.prefix,
                                   repeats=args.repeats, progress=_log)
    emit(figures, args.out)


if __name__ == "__main__":
    main()
