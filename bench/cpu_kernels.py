"""Our CPU kernels against ONNX Runtime's, alternating in one run: `mixtral-export bench-cpu-kernels`.

For each expert dtype, two engines of the same export (`--cpu-kernels ours` and `--cpu-kernels ort`; ONNX
Runtime has no bf16 CPU kernels, so our bf16-expert engine is compared with its fp32 engine), loaded side by
side and measured in turn, round after round, so both see the same load on a shared machine:

    decode b1   greedy steps at batch 1 after a `context`-token prompt (ms per step)
    decode b8   the same at batch 8, 8 different prompts (the first the batch-1 prompt; ms per step), and the batch
                gain: 8 x decode b1 / decode b8 (tokens per second at batch 8 over batch 1)
    prefill     one forward over a `prefill`-token prompt, the last position's logits (ms)

Each figure is reported as best and median over the rounds (noise only slows: the best is the kernels' speed,
the median what a loaded machine gave), with ours / ort speed-ups of both.

`baseline="ort-linears"` measures our linears alone: the baseline engine is then ours too (same experts) with
the LM head and projections on ONNX Runtime's MatMul / MatMulNBits (`--cpu-linears none`), and `linears` picks
which of ours the other engine runs (`--cpu-linears`; default: the build's).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.common.progress import step
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.plugins import cpu_kernels

DTYPES = ("fp32", "bf16", "int8", "int4")


BASELINES = ("ort", "ort-linears")


def _engines(workdir: Path, preset: str, dtype: str, max_seq: int, batch: int, progress, linears: str | None = None,
             baseline: str = "ort") -> dict[str, Path]:
    from mixtral_trt.exporter.export import export_checkpoint
    from mixtral_trt.mixtral_ref.writer import init_checkpoint

    ckpt = workdir / f"{preset}-checkpoint"
    if not ckpt.exists():
        with step(progress, f"init {preset} checkpoint"):
            init_checkpoint(get_preset(preset), ckpt, seed=0)
    quantize = dtype if dtype in ("int8", "int4") else None
    onnx_dir = workdir / f"{preset}-s{max_seq}-b{batch}-onnx-{quantize or 'fp32'}"
    if not onnx_dir.exists():
        export_checkpoint(ckpt, onnx_dir, max_seq=max_seq, max_batch=batch, quantize_experts=quantize,
                          progress=progress)
    out = {}
    for kernels in ("ours", "ort"):
        options: dict[str, Any] = {"cpu_kernels": kernels}
        if dtype == "bf16" and (kernels == "ours" or baseline == "ort-linears"):
            options["expert_dtype"] = "bf16"
        if kernels == "ours" and linears is not None:
            options["cpu_linears"] = linears
        if kernels == "ort" and baseline == "ort-linears":
            options.update(cpu_kernels="ours", cpu_linears="none")
        tag = "-".join(f"{k}={v}".replace(",", "+") for k, v in sorted(options.items()) if k != "cpu_kernels")
        engine = workdir / f"{preset}-s{max_seq}-b{batch}-engine-{dtype}-{kernels}{'-' + tag if tag else ''}"
        if not engine.exists():
            build_engine(onnx_dir, engine, "ort", progress=progress, **options)
        out[kernels] = engine
    return out


def _decode_ms(engine, prompt: np.ndarray, steps: int) -> float:
    out, cache = engine.forward(prompt)
    tokens = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    start = time.perf_counter()
    for _ in range(steps):
        out, cache = engine.forward(tokens, cache)
        tokens = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    return (time.perf_counter() - start) * 1e3 / steps


def _prefill_ms(engine, prompt: np.ndarray) -> float:
    start = time.perf_counter()
    engine.forward(prompt, logits_to_keep=1)  # a generation's prefill: the last position's logits
    return (time.perf_counter() - start) * 1e3


def _summary(samples: list[float]) -> dict[str, float]:
    return {"best_ms": min(samples), "median_ms": statistics.median(samples), "samples_ms": samples}


def compare(workdir: Path, preset: str = "small", dtypes: tuple[str, ...] = DTYPES, threads: int = 2,
            rounds: int = 5, context: int = 128, steps: int = 16, batch: int = 8, prefill: int = 512,
            progress=None, linears: str | None = None, baseline: str = "ort") -> dict[str, Any]:
    os.environ["MIXTRAL_TRT_THREADS"] = str(threads)  # runtime/backends/ort.py session_options
    workdir.mkdir(parents=True, exist_ok=True)
    max_seq = max(context + steps, prefill) + 8
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    for dtype in dtypes:
        paths = _engines(workdir, preset, dtype, max_seq, batch, progress, linears, baseline)
        engines = {k: runtime.load(p, verify=False) for k, p in paths.items()}
        vocab = engines["ours"].config.vocab_size
        prompts = rng.integers(0, vocab, (batch, context), dtype=np.int64)  # different prompts: realistic routing
        prompt1 = prompts[:1]
        long = rng.integers(0, vocab, (1, prefill), dtype=np.int64)
        samples: dict[str, dict[str, list[float]]] = {k: {"decode_b1": [], f"decode_b{batch}": [], "prefill": []}
                                                      for k in engines}
        for engine in engines.values():  # warm-up: first calls allocate
            _decode_ms(engine, prompt1, 2)
        with step(progress, f"{dtype}: {rounds} rounds, ours and ort alternating"):
            for _ in range(rounds):
                for kernels, engine in engines.items():
                    samples[kernels]["decode_b1"].append(_decode_ms(engine, prompt1, steps))
                    samples[kernels][f"decode_b{batch}"].append(_decode_ms(engine, prompts, steps))
                    samples[kernels]["prefill"].append(_prefill_ms(engine, long))
        row: dict[str, Any] = {k: {m: _summary(v) for m, v in s.items()} for k, s in samples.items()}
        if baseline == "ort-linears":
            row["ort_engine"] = f"{dtype}, ours with ONNX Runtime's linears"
        else:
            row["ort_engine"] = "fp32 (ONNX Runtime has no bf16 CPU kernels)" if dtype == "bf16" else dtype
        row["ort_experts"] = engines["ort"].manifest.backend_info.get("experts")
        row["ours_linears"] = engines["ours"].manifest.backend_info.get("cpu_kernels", {}).get("linears")
        row["speedup"] = {m: {stat: row["ort"][m][f"{stat}_ms"] / row["ours"][m][f"{stat}_ms"]
                              for stat in ("best", "median")} for m in samples["ours"]}
        # tokens per second at batch `batch` over batch 1 (issue 22's target: >= 3.2x at 8 for `small`)
        row["batch_gain"] = {k: {stat: batch * row[k]["decode_b1"][f"{stat}_ms"]
                                 / row[k][f"decode_b{batch}"][f"{stat}_ms"] for stat in ("best", "median")}
                             for k in engines}
        results[dtype] = row
        del engines
    library = cpu_kernels.library_path()
    return {"settings": {"preset": preset, "threads": threads, "rounds": rounds, "context": context, "steps": steps,
                         "batch": batch, "prefill": prefill, "baseline": baseline, "linears": linears},
            "cpu_kernels": {"library": str(library), "isa": cpu_kernels.isa(library)},
            "load_average": os.getloadavg(), "results": results}
