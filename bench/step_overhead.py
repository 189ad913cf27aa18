"""The runtime's own time per decode step: what `Engine.forward` spends outside ONNX Runtime's session run.

`python -m mixtral_trt.bench.step_overhead ENGINE [ENGINE ...] --threads 1`: per engine directory (ort /
ort-gqa), a `context`-token prefill then rounds of `steps` greedy decode steps through the runtime's Engine
(as `bench/timing.py::engine_decode` runs them); each step's process CPU time is split into the part inside
`InferenceSession.run_with_iobinding` and the rest (feeds, masks, positions, IO binding, output copies, the
cache object). Engines alternate round by round; best of the rounds per engine. CPU time, so a loaded machine
moves it less than wall time; with `--threads 1` the session's CPU time is its one thread's.
`--cprofile N` prints the N costliest functions (by own time) of one extra round per engine. `--library PATH`
(repeatable) registers that build of our CPU kernels in place of each engine's own copy: every engine is then
measured once per library, alternating (a kernel change before / after on the same engines, `--batch 8` for the
few-row GEMMs of batched decode).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
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


def open_timed(engine_dir: Path, threads: int | None, library: Path | None = None) -> tuple[Engine, _TimedSession]:
    """The engine through a timed session; `library`: register this build of our CPU kernels instead of the
    engine's copy (the engine's manifest must name one)."""
    manifest = Manifest.load(engine_dir, verify=False)
    hook = custom_ops_hook(manifest, engine_dir)
    if library is not None:
        if hook is None:
            raise MixtralTrtError(f"{engine_dir}: --library given, but the engine does not use our CPU kernels")
        hook = lambda so: so.register_custom_ops_library(str(library))  # noqa: E731
    runner = OrtRunner(engine_dir / manifest.model_file, device="cpu", threads=threads, session_options_hook=hook)
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
            rounds: int = 5, batch: int = 1, seed: int = 0, cprofile: int = 0,
            libraries: list[Path] | None = None) -> dict[str, dict[str, float]]:
    """"ENGINE" (or "ENGINE @ LIBRARY") -> best-of-rounds {total_ms, session_ms, outside_ms}; best = least
    outside_ms, or least total_ms when libraries are compared."""
    pairs = [(d, lib) for d in engine_dirs for lib in (libraries or [None])]
    opened = {f"{d}" + (f" @ {lib}" if lib else ""): open_timed(d, threads, lib) for d, lib in pairs}
    key = "total_ms" if libraries else "outside_ms"
    vocab = next(iter(opened.values()))[0].config.vocab_size
    prompt = np.random.default_rng(seed).integers(3, vocab, (batch, context))
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for d, (engine, timed) in opened.items():
            got = decode_round(engine, timed, prompt, steps)
            if d not in best or got[key] < best[d][key]:
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
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cprofile", type=int, default=0)
    parser.add_argument("--library", type=Path, action="append")
    args = parser.parse_args(argv)
    result = measure(args.engines, args.threads, args.context, args.steps, args.rounds, args.batch,
                     cprofile=args.cprofile, libraries=args.library)
    print(f"batch {args.batch}, {args.threads} thread(s), best of {args.rounds} rounds of {args.steps} steps "
          f"(load average {os.getloadavg()[0]:.1f})")
    for d, v in result.items():
        print(f"{d}: {v['total_ms']:.3f} ms/step CPU, session {v['session_ms']:.3f}, outside {v['outside_ms']:.3f}")


if __name__ == "__main__":
    main()
