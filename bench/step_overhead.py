"""The runtime's own time per decode step: what `Engine.forward` spends outside ONNX Runtime's session run.

`python -m mixtral_trt.bench.step_overhead ENGINE [ENGINE ...] --threads 1`: per engine directory (ort /
ort-gqa), a `context`-token prefill then rounds of `steps` greedy decode steps through the runtime's Engine
(as `bench/timing.py::engine_decode` runs them); each step's process CPU time is split into the part inside
`InferenceSession.run_with_iobinding` and the rest (feeds, masks, positions, IO binding, output copies, the
cache object). Engines alternate round by round; best of the rounds per engine. CPU time, so a loaded machine
moves it less than wall time; with `--threads 1` the session's CPU time is its one thread's.
`--cprofile N` prints the N costliest functions (cumulative) of one extra round per engine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.manifest import Manifest
from mixtral_trt.runtime.backends.ort import OrtRunner, custom_ops_hook
from mixtral_trt.runtime.engine import Engine


class _TimedSession:
    """An InferenceSession whose `run_with_iobinding` adds its CPU time to `inside` (everything else passes)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.inside = 0.0

    def run_with_iobinding(self, binding: Any, *args: Any) -> Any:
        start = time.process_time()
        try:
            return self._session.run_with_iobinding(binding, *args)
        finally:
            self.inside += time.process_time() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def open_timed(engine_dir: Path, threads: int | None) -> tuple[Engine, _TimedSession]:
    manifest = Manifest.load(engine_dir, verify=False)
    runner = OrtRunner(engine_dir / manifest.model_file, device="cpu", threads=threads,
                       session_options_hook=custom_ops_hook(manifest, engine_dir))
    timed = _TimedSession(runner.session)
    runner.session = timed
    return Engine(engine_dir, manifest, runner), timed


def decode_round(engine: Engine, timed: _TimedSession, prompt: np.ndarray, steps: int) -> dict[str, float]:
    """CPU ms per step: total, inside the session, outside it (prefill of `prompt` [B, P] not counted)."""
    out, cache = engine.forward(prompt)
    tokens = out["logits"][:, -1].argmax(-1)[:, None]
    timed.inside = 0.0
    start = time.process_time()
    for _ in range(steps):
        out, cache = engine.forward(tokens, cache)
        tokens = out["logits"][:, -1].argmax(-1)[:, None]
    total = (time.process_time() - start) * 1e3 / steps
    inside = timed.inside * 1e3 / steps
    return {"total_ms": total, "session_ms": inside, "outside_ms": total - inside}


def measure(engine_dirs: list[Path], threads: int | None = 1, context: int = 128, steps: int = 32,
            rounds: int = 5, batch: int = 1, seed: int = 0, cprofile: int = 0) -> dict[str, dict[str, float]]:
    """Engine directory -> best-of-rounds {total_ms, session_ms, outside_ms} (best = least outside_ms)."""
    opened = {d: open_timed(d, threads) for d in engine_dirs}
    vocab = next(iter(opened.values()))[0].config.vocab_size
    prompt = np.random.default_rng(seed).integers(3, vocab, (batch, context))
    best: dict[Path, dict[str, float]] = {}
    for _ in range(rounds):
        for d, (engine, timed) in opened.items():
            got = decode_round(engine, timed, prompt, steps)
            if d not in best or got["outside_ms"] < best[d]["outside_ms"]:
                best[d] = got
    if cprofile:
        import cProfile
        import pstats

        for d, (engine, timed) in opened.items():
            profiler = cProfile.Profile()
            profiler.enable()
            decode_round(engine, timed, prompt, steps)
            profiler.disable()
            print(f"== {d}")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(cprofile)
    return {str(d): v for d, v in best.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cprofile", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(args.engines, args.threads, args.context, args.steps, args.rounds, args.batch,
                     cprofile=args.cprofile)
    for d, v in result.items():
        print(f"{d}: {v['total_ms']:.3f} ms/step CPU, session {v['session_ms']:.3f}, outside {v['outside_ms']:.3f}")


if __name__ == "__main__":
    main()
