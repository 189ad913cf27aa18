"""llama.cpp as the peer: what a user would run instead on a CPU, on the same checkpoint, in the same run.

Optional and never a CI dependency: given a llama.cpp directory (a build tree or an install), this module
finds its tools, converts the benchmark's checkpoint with llama.cpp's own `convert_hf_to_gguf.py` (f32,
f16, bf16, q8_0; q4_0 through `llama-quantize`: each only where one of our engines of that width was measured,
so f16 only with `bench --fp16`), checks the f32 GGUF's logits against the reference (through
`llama-debug --save-logits`, with flash attention off and an f32 KV cache so that only arithmetic order
differs), and runs `llama-bench` (decode after `context` tokens, prefill from an empty cache).

The parsing and the ratios are plain functions on text and dicts, unit-tested without llama.cpp.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import step

from .roofline import StepBytes, step_bytes

# our engine kind -> llama.cpp's GGUF type of the same width (q4_0: 32-wide blocks, as our int4)
# (bf16: our engine with bf16 experts on our CPU kernels, attention in fp32; llama.cpp's bf16 GGUF has every
# matrix in bf16)
GGUF_TYPES = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "q8_0", "int4": "q4_0"}
CONVERT_TYPES = ("f32", "f16", "bf16", "q8_0")  # what convert_hf_to_gguf.py writes itself
TOOLS = {"bench": "llama-bench", "quantize": "llama-quantize", "debug": "llama-debug"}
LOGITS_PROMPT = "The capital of France is"
FP32_LOGITS_TOLERANCE = 1e-4  # relative (max |d| / max |ref|), as parity's fp32 tolerance


@dataclass(frozen=True)
class LlamaCppTools:
    root: Path
    bench: Path
    quantize: Path
    convert: Path
    debug: Path | None  # llama-debug: the logits check is skipped (and says so) without it
    gguf_py: Path | None  # the gguf package next to the convert script, when not installed


def _find(root: Path, name: str, executable: bool) -> Path | None:
    for sub in ("", "bin", "build/bin", "build", "vendor/llama.cpp", "vendor/llama.cpp/build/bin"):
        candidate = root / sub / name
        if candidate.is_file() and (not executable or os.access(candidate, os.X_OK)):
            return candidate
    hits = sorted(p for p in root.rglob(name) if p.is_file() and (not executable or os.access(p, os.X_OK)))
    return hits[0] if hits else None


def find_llama_cpp(root: str | Path) -> LlamaCppTools:
    """The tools under `root` (searched in the usual build/install places, then recursively)."""
    root = Path(root)
    if not root.is_dir():
        raise MixtralTrtError(f"--llama-cpp {root}: not a directory")
    found = {key: _find(root, exe, True) for key, exe in TOOLS.items()}
    convert = _find(root, "convert_hf_to_gguf.py", False)
    missing = [TOOLS[k] for k in ("bench", "quantize") if found[k] is None]
    missing += [] if convert else ["convert_hf_to_gguf.py"]
    if missing:
        raise MixtralTrtError(f"--llama-cpp {root}: {', '.join(missing)} not found (build llama.cpp there: "
                              "cmake -B build && cmake --build build --target llama-bench llama-quantize llama-debug)")
    gguf_py = convert.parent / "gguf-py"
    return LlamaCppTools(root, found["bench"], found["quantize"], convert, found["debug"],
                         gguf_py if gguf_py.is_dir() else None)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as e:
        raise MixtralTrtError(f"llama.cpp {what}: cannot run {cmd[0]} ({e})") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])[:300]
        raise MixtralTrtError(f"llama.cpp {what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def convert_checkpoint(tools: LlamaCppTools, checkpoint: Path, out_dir: Path,
                       kinds: tuple[str, ...]) -> dict[str, Path]:
    """GGUF files of `checkpoint` for our engine kinds (fp32, fp16, int8, int4), cached in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if tools.gguf_py is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tools.gguf_py), env.get("PYTHONPATH")]))
    paths: dict[str, Path] = {}
    for kind in kinds:
        gtype = GGUF_TYPES[kind]
        path = out_dir / f"model-{gtype}.gguf"
        if not path.exists():
            tmp = path.with_suffix(".tmp.gguf")
            if gtype in CONVERT_TYPES:
                _run([sys.executable, str(tools.convert), str(checkpoint), "--outtype", gtype, "--outfile", str(tmp)],
                     f"convert_hf_to_gguf.py --outtype {gtype}", env)
            else:
                source = convert_checkpoint(tools, checkpoint, out_dir, ("fp32",))["fp32"]
                _run([str(tools.quantize), str(source), str(tmp), gtype], f"llama-quantize {gtype}")
            tmp.replace(path)
        paths[kind] = path
    return paths


def llama_bench_command(tools: LlamaCppTools, models: list[Path], threads: int, context: int, new_tokens: int,
                        prefill_tokens: int, repeats: int = 5) -> list[str]:
    """Decode: `new_tokens` after `context` cached tokens; prefill: `prefill_tokens` from an empty cache."""
    cmd = [str(tools.bench)]
    for m in models:
        cmd += ["-m", str(m)]
    return cmd + ["-t", str(threads), "-p", str(prefill_tokens), "-n", str(new_tokens), "-d", f"0,{context}",
                  "-r", str(repeats), "-o", "json"]


def parse_llama_bench(text: str, context: int) -> dict[str, dict[str, dict[str, Any]]]:
    """llama-bench's JSON -> {gguf file name: {"decode" | "prefill": {median, best, mean, samples}}}: decode
    is the generation test at depth `context`, prefill the prompt test at depth 0."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise MixtralTrtError(f"llama-bench output is not JSON ({e})") from None
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        gen, prompt, depth = int(r.get("n_gen", 0)), int(r.get("n_prompt", 0)), int(r.get("n_depth", 0))
        if gen and not prompt and depth == context:
            test = "decode"
        elif prompt and not gen and depth == 0:
            test = "prefill"
        else:
            continue
        samples = [float(x) for x in r.get("samples_ts") or [r["avg_ts"]]]
        out.setdefault(Path(r["model_filename"]).name, {})[test] = {
            "median": statistics.median(samples), "best": max(samples), "mean": float(r["avg_ts"]),
            "samples": samples, "tokens": gen or prompt, "type": r.get("model_type", "")}
    return out


def run_llama_bench(tools: LlamaCppTools, models: dict[str, Path], threads: int, context: int, new_tokens: int,
                    prefill_tokens: int, repeats: int = 5) -> dict[str, Any]:
    cmd = llama_bench_command(tools, list(models.values()), threads, context, new_tokens, prefill_tokens, repeats)
    parsed = parse_llama_bench(_run(cmd, "llama-bench"), context)
    by_kind = {kind: parsed.get(path.name, {}) for kind, path in models.items()}
    return {"command": " ".join(cmd), "figures": by_kind}


def read_debug_logits(out_dir: Path, model: Path) -> tuple[np.ndarray, np.ndarray]:
    """llama-debug --save-logits files: token ids (int32) and the last token's logits (float32 [V])."""
    stem = out_dir / f"llamacpp-{model.stem}"
    ids, logits = Path(f"{stem}-tokens.bin"), Path(f"{stem}.bin")
    for f in (ids, logits):
        if not f.is_file():
            raise MixtralTrtError(f"llama-debug wrote no {f.name} in {out_dir}")
    return np.fromfile(ids, np.int32).astype(np.int64), np.fromfile(logits, np.float32)


def compare_logits(peer: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Relative error max |peer - ref| / max |ref| and top-1 agreement of one token's logits."""
    if peer.shape != reference.shape:
        raise MixtralTrtError(f"llama.cpp logits have shape {peer.shape}, the reference {reference.shape}")
    err = float(np.abs(peer - reference).max() / max(float(np.abs(reference).max()), 1e-30))
    return {"relative_error": err, "top1_match": bool(peer.argmax() == reference.argmax())}


def check_logits(tools: LlamaCppTools, gguf: Path, reference, work: Path, threads: int) -> dict[str, Any]:
    """The GGUF's last-token logits on LOGITS_PROMPT (llama.cpp's tokenizer) against `reference(ids) -> [V]`."""
    if tools.debug is None:
        return {"checked": False, "reason": "llama-debug not found: logits not checked"}
    work.mkdir(parents=True, exist_ok=True)
    _run([str(tools.debug), "-m", str(gguf), "-p", LOGITS_PROMPT, "--save-logits", "--logits-output-dir", str(work),
          "-t", str(threads), "-fa", "off", "-ctk", "f32", "-ctv", "f32"], "llama-debug --save-logits")
    ids, logits = read_debug_logits(work, gguf)
    return {"checked": True, "prompt": LOGITS_PROMPT, "token_ids": ids.tolist(),
            **compare_logits(logits, reference(ids))}


def peer_ratios(ours: dict[str, float | None], peer: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """ours / llama.cpp for each row: `ours` maps "KIND decode" and "KIND prefill" (KIND: "fp32" ... "int4")
    to tok/s (None or absent: not measured; our figures are the best of their repeats); `peer` maps our kind to
    llama-bench's {"decode": ..., "prefill": ...} figures, of which the best repetition is compared, like ours."""
    rows: dict[str, dict[str, Any]] = {}
    for test in ("decode", "prefill"):
        for kind in GGUF_TYPES:
            mine, theirs = ours.get(f"{kind} {test}"), peer.get(kind, {}).get(test, {}).get("best")
            rows[f"{kind} {test}"] = {"ours": mine, "llama_cpp": theirs, "llama_cpp_type": GGUF_TYPES[kind],
                                      "ratio": mine / theirs if mine and theirs else None}
    return rows


# issue 22's targets: our CPU kernels at least as fast as llama.cpp for every type, decode and prefill
PEER_TARGETS = {f"{kind} {test}": 1.0 for test in ("decode", "prefill") for kind in ("fp32", "bf16", "int8", "int4")}


def peer_targets(rows: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    """Issue 22's targets: decode and prefill >= 1.0x llama.cpp for fp32 (f32), bf16, int8 (q8_0), int4 (q4_0);
    None where a row was not measured."""
    return {f"{row} >= {t}x": (rows[row]["ratio"] >= t if rows.get(row, {}).get("ratio") else None)
            for row, t in PEER_TARGETS.items()}


# bytes per weight of llama.cpp's types (blocks of 32: q8_0 34 bytes, q4_0 18; q6_K 210 bytes per 256)
GGUF_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q6_K": 210 / 256}


def peer_step_bytes(cfg: MixtralConfig, kind: str) -> StepBytes:
    """Bytes a llama.cpp decode step reads. q4_0 follows llama-quantize's recipe as this run's GGUF has it
    (attn_k / attn_v in q8_0, the output matrix in q6_K): an estimate from the type sizes."""
    gtype = GGUF_TYPES[kind]
    b = GGUF_BYTES[gtype]
    if gtype == "q4_0":
        return step_bytes(cfg, experts=b, attention=b, kv=GGUF_BYTES["q8_0"], head=GGUF_BYTES["q6_K"])
    return step_bytes(cfg, experts=b, attention=b)


def peer_kinds(ours: dict[str, float | None]) -> tuple[str, ...]:
    """The GGUF kinds worth converting and benchmarking: those of which one of our engines was measured (f16
    only with `bench --fp16`: converting, checking and benchmarking it otherwise costs a minute for a row with
    nothing of ours beside it); fp32 always (the logits check runs on it)."""
    return tuple(k for k in GGUF_TYPES if k == "fp32" or ours.get(f"{k} decode") or ours.get(f"{k} prefill"))


def measure_peer(s, checkpoint: Path, reference, cfg: MixtralConfig, threads: int, ours: dict[str, float | None],
                 progress=None) -> dict[str, Any]:
    """Convert, check logits, llama-bench, ratios: the `peer` section of bench.json (`s`: BenchSettings). Only
    the kinds of which ours were measured (peer_kinds) are converted and benchmarked."""
    import torch

    tools = find_llama_cpp(s.llama_cpp)
    kinds = peer_kinds(ours)
    work = s.workdir / f"{s.preset}-seed{s.seed}-gguf"
    with step(progress, "llama.cpp: convert the checkpoint (convert_hf_to_gguf.py, llama-quantize)"):
        ggufs = convert_checkpoint(tools, checkpoint, work, kinds)

    def last_logits(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return reference(torch.from_numpy(ids[None]))[0, -1].float().numpy()

    logits = {}
    with step(progress, "llama.cpp: logits against the reference (llama-debug)"):
        for kind in kinds:
            logits[kind] = check_logits(tools, ggufs[kind], last_logits, work / f"logits-{kind}", threads)
    f32 = logits["fp32"]
    if f32.get("checked"):
        f32["tolerance"] = FP32_LOGITS_TOLERANCE
        f32["passed"] = f32["relative_error"] <= FP32_LOGITS_TOLERANCE
    with step(progress, "llama.cpp: llama-bench"):
        bench = run_llama_bench(tools, ggufs, threads, s.context, s.new_tokens, s.prefill_tokens)
    rows = peer_ratios(ours, bench["figures"])
    reads = {}
    for kind in kinds:
        fig = bench["figures"].get(kind, {}).get("decode")
        if fig:
            b = peer_step_bytes(cfg, kind)
            reads[GGUF_TYPES[kind]] = {"tok_s": fig["best"], "fixed": b.fixed, "experts": b.experts}
    skipped = {GGUF_TYPES[k]: "none of our engines of this kind was measured" for k in GGUF_TYPES if k not in kinds}
    return {"name": "llama.cpp", "root": str(tools.root), "gguf": {k: str(v) for k, v in ggufs.items()},
            "skipped": skipped,
            "logits": logits, "llama_bench": bench, "ratios": rows, "targets": peer_targets(rows),
            "decode_reads": reads,
            "note": "llama-bench defaults: f16 KV cache, flash attention auto; the logits check uses an f32 cache "
                    "and no flash attention"}
