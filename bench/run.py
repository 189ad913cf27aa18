"""`run_bench`: one run, one checkpoint, the same prompts for every implementation.

Artifacts (checkpoint, export, engines) are cached under `workdir` and reused by later runs.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.common.backends import BACKENDS, get_backend
from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import step
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref import load_model
from mixtral_trt.mixtral_ref.writer import init_checkpoint
from mixtral_trt.plugins import cpu_kernels

from . import system, timing
from .bandwidth import last_level_cache_bytes, measure_bandwidth
from .constrained import constrained_overhead
from .moe_layer import moe_layer_ms
from .noise import Window
from .peer_llamacpp import measure_peer
from .result import BenchResult, MoeLayer, targets
from .roofline import StepBytes, check_roofline, kv_cache_bytes, quantized_step_bytes, roofline_tok_s, step_bytes

if TYPE_CHECKING:
    from rich.progress import Progress

    from mixtral_trt.common.config import MixtralConfig

# The Triton interpreter runs the plugin kernels in Python: far too slow for full-size decode, so the
# plugins-cpu figures use fewer tokens (recorded in the JSON) and say nothing about GPU speed.
INTERPRETER_LIMITS = {"new_tokens": 2, "prefill_tokens": 16}


# expert forms the bench builds: ONNX Runtime's (lowering/ort.py EXPERT_FORMS) and our CPU kernels' node
BENCH_FORMS = ("ours", "matmul", "moe")


@dataclass(frozen=True)
class BenchSettings:
    preset: str = "small"
    backends: tuple[str, ...] = tuple(BACKENDS)
    context: int = 128
    new_tokens: int = 64
    prefill_tokens: int = 512
    moe_tokens: tuple[int, ...] = (1, 512)
    workdir: Path = Path("bench-out")
    threads: int | None = None  # default: all cores
    hf: bool = True
    quantize: tuple[str, ...] = ()  # weight-only expert schemes to add (ONNX Runtime engines): int8, int4
    fp16: bool = False  # also an fp16 export on the ort backend
    bf16: bool = False  # also bf16 experts on our CPU kernels (ort backend; measured too with a peer)
    decode_repeats: int = 3  # decode runs per implementation; the best is reported (noise only slows)
    peer: str | None = None  # "llama.cpp": measure it on the same checkpoint (needs `llama_cpp`)
    llama_cpp: Path | None = None  # a llama.cpp build or install directory
    experts: tuple[str, ...] = ()  # expert forms of the ort lowering to measure (lowering/ort.py; none given: the
    #                                build's default); the first is reported under the backend's name, others as
    #                                "ort (moe)"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """One-line errors naming the option, before anything runs."""
        from mixtral_trt.mixtral_ref.presets import get_preset

        get_preset(self.preset)
        for name in self.backends:
            get_backend(name, "--backends")
        for name in self.quantize:
            QuantScheme.parse(name)
        if self.peer not in (None, "llama.cpp"):
            raise MixtralTrtError(f"--peer {self.peer!r}: the only peer is llama.cpp")
        if self.peer and self.llama_cpp is None:
            raise MixtralTrtError("--peer llama.cpp needs --llama-cpp DIR (a llama.cpp build or install directory)")
        for form in self.experts:
            if form not in BENCH_FORMS:
                raise MixtralTrtError(f"--experts {form!r}: choose from {', '.join(BENCH_FORMS)}")
        if self.decode_repeats < 1:
            raise MixtralTrtError(f"--decode-repeats {self.decode_repeats}: must be >= 1")


def _checkpoint(s: BenchSettings, progress: Progress | None) -> Path:
    from mixtral_trt.mixtral_ref import get_preset

    ckpt = s.workdir / f"{s.preset}-seed{s.seed}-checkpoint"
    if not ckpt.exists():
        with step(progress, f"init {s.preset} checkpoint"):
            init_checkpoint(get_preset(s.preset), ckpt, seed=s.seed)
    return ckpt


def _cache_dirs(s: BenchSettings, backend: str, quantize: str | None = None,
                dtype: str = "fp32", experts: str | None = None,
                expert_dtype: str | None = None) -> tuple[Path, Path, int]:
    """Where the export and the engine are cached, and their max_seq (in the names: a longer --context
    re-exports instead of reusing a shorter engine; so is an `ort`-lowered engine's expert form, the build's
    default one resolved once the export exists)."""
    suffix = (f"-{QuantScheme.parse(quantize).name}" if quantize else "") + ("" if dtype == "fp32" else f"-{dtype}")
    max_seq = max(s.context + s.new_tokens, s.prefill_tokens) + 8
    stem = f"{s.preset}-seed{s.seed}-s{max_seq}"
    onnx_dir = s.workdir / f"{stem}-onnx-{dtype}{suffix if quantize else ''}"
    if experts is None and get_backend(backend).lowering == "ort" and onnx_dir.is_dir():
        from mixtral_trt.exporter.lowering.ort import expert_form

        ours = cpu_kernels.library_path() is not None  # the build's default where our library is built
        experts = "ours" if ours else expert_form(GraphContract.load(onnx_dir), "cpu")
    engine = f"{stem}-engine-{backend}{suffix}{f'-{experts}' if experts else ''}"
    return onnx_dir, s.workdir / (engine + (f"-{expert_dtype}-experts" if expert_dtype else "")), max_seq


def _engine_dir(s: BenchSettings, ckpt: Path, backend: str, progress: Progress | None,
                quantize: str | None = None, dtype: str = "fp32", experts: str | None = None,
                expert_dtype: str | None = None) -> Path:
    """The export (quantized with `quantize`) and its `backend` engine (experts stored as `expert_dtype`: our
    CPU kernels), built once in workdir."""
    onnx_dir, _, max_seq = _cache_dirs(s, backend, quantize, dtype, experts)
    if not onnx_dir.exists():
        export_checkpoint(ckpt, onnx_dir, dtype=dtype, max_seq=max_seq, max_batch=1, quantize_experts=quantize,
                          progress=progress)
    engine_dir = _cache_dirs(s, backend, quantize, dtype, experts, expert_dtype)[1]
    if not engine_dir.exists():
        ours = experts == "ours"
        build_engine(onnx_dir, engine_dir, backend, progress=progress, experts=None if ours else experts,
                     cpu_kernels="ours" if ours else None if experts is None else "ort", expert_dtype=expert_dtype)
    return engine_dir


def _variants(s: BenchSettings, backend: str) -> list[tuple[str, str | None]]:
    """(name in the results, expert form) of each engine of `backend` to measure: the build's default, or one
    per --experts form for the `ort`-lowered backends, the first under the backend's own name, the others as
    "ort (moe)"."""
    if get_backend(backend).lowering != "ort" or not s.experts:
        return [(backend, None)]
    return [(backend if i == 0 else f"{backend} ({form})", form) for i, form in enumerate(s.experts)]


def _decode(fn, repeats: int) -> tuple[timing.Throughput, dict[str, Any]]:
    """The best of `repeats` decode runs, with every run's tok/s and the other processes' CPU meanwhile."""
    runs, noise = [], []
    for _ in range(repeats):
        with Window() as w:
            runs.append(fn())
        noise.append(w.other_cores)
    best = max(runs, key=lambda r: r.tok_s)
    return best, {"tok_s": [r.tok_s for r in runs], "other_cores": noise}


@dataclass(frozen=True)
class Prompts:
    """The token ids every implementation is timed on: a decode context and a long prompt for prefill."""

    context: list[int]
    long_prompt: list[int]

    @classmethod
    def draw(cls, s: BenchSettings, vocab_size: int) -> Prompts:
        rng = np.random.default_rng(s.seed)
        context = rng.integers(3, vocab_size, s.context).tolist()
        return cls(context, rng.integers(3, vocab_size, s.prefill_tokens).tolist())


@dataclass
class Figures:
    """What the timed implementations gave, filled phase by phase (one name per implementation)."""

    settings: BenchSettings
    config: MixtralConfig
    decode: dict[str, float] = field(default_factory=dict)  # best decode tok/s
    decode_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # every run's tok/s, the other processes' CPU
    prefill: dict[str, float] = field(default_factory=dict)
    token_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # implementation -> why it was not measured
    reads: dict[str, tuple[float, StepBytes]] = field(default_factory=dict)  # decode tok/s, bytes read per step

    def record(self, name: str, dec: tuple[timing.Throughput, dict], pre: timing.Throughput, read: StepBytes,
               kv_value_bytes: float = 4) -> None:
        self.decode[name], self.prefill[name], self.decode_runs[name] = dec[0].tok_s, pre.tok_s, dec[1]
        self.token_counts[name] = {"new_tokens": dec[0].tokens, "prefill_tokens": pre.tokens}
        self.reads[name] = (dec[0].tok_s, replace(read, cache=_kv_bytes(self.settings, self.config, kv_value_bytes)))


def run_bench(s: BenchSettings, progress: Progress | None = None) -> BenchResult:
    threads = _use_threads(s)
    with step(progress, "measure read bandwidth (3 methods, repeated)"):
        bandwidths = [measure_bandwidth(threads)]
    ckpt = _checkpoint(s, progress)
    reference = load_model(ckpt)
    prompts = Prompts.draw(s, reference.config.vocab_size)
    figures = Figures(s, reference.config)
    constrained = _measure_engines(figures, ckpt, prompts, progress)
    if s.fp16:
        _measure_fp16(figures, ckpt, prompts, progress)
    if s.bf16 or s.peer:
        _measure_bf16(figures, ckpt, prompts, progress)
    _measure_references(figures, reference, ckpt, prompts, progress)
    quantized = _measure_quantized(figures, ckpt, prompts, progress)
    with step(progress, "MoE layer: sparse vs dense"):
        moe = MoeLayer.of(moe_layer_ms(reference.config, s.moe_tokens, s.seed, threads), s.moe_tokens)
    peer = _measure_peer(figures, ckpt, reference, threads, quantized, progress) if s.peer else None
    with step(progress, "measure read bandwidth again"):
        bandwidths.append(measure_bandwidth(threads))
    return _result(figures, threads, bandwidths, quantized, moe, peer, constrained)


def _use_threads(s: BenchSettings) -> int:
    """The threads every implementation runs on (torch's and our engines'): --threads, or every core."""
    import torch

    threads = s.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ["MIXTRAL_TRT_THREADS"] = str(threads)
    return threads


def _measure_engines(figures: Figures, ckpt: Path, prompts: Prompts, progress: Progress | None) -> dict | None:
    """Every backend asked for (each expert form of the ort-lowered ones); returns the constrained-decoding
    figures of the ort engine, if measured."""
    s, constrained = figures.settings, None
    for backend in s.backends:
        reason = get_backend(backend).unavailable()
        if reason:
            figures.skipped[backend] = reason
            continue
        for name, form in _variants(s, backend):
            engine = runtime.load(_engine_dir(s, ckpt, backend, progress, experts=form), verify=False)
            slow = backend == "plugins-cpu"
            new = INTERPRETER_LIMITS["new_tokens"] if slow else s.new_tokens
            pre_prompt = prompts.long_prompt[: INTERPRETER_LIMITS["prefill_tokens"]] if slow else prompts.long_prompt
            with step(progress, f"{name}: decode and prefill"):
                figures.record(name, _decode(lambda e=engine, n=new: timing.engine_decode(e, prompts.context, n),
                                             1 if slow else s.decode_repeats),
                               timing.engine_prefill(engine, pre_prompt, repeats=1 if slow else 3),
                               step_bytes(figures.config, all_experts=get_backend(backend).lowering == "portable"))
            if name == "ort":
                constrained = _constrained(engine, prompts.context, s, progress, figures.skipped)
            del engine
    return constrained


def _measure_fp16(figures: Figures, ckpt: Path, prompts: Prompts, progress: Progress | None) -> None:
    s = figures.settings
    engine = runtime.load(_engine_dir(s, ckpt, "ort", progress, dtype="fp16"), verify=False)
    with step(progress, "ort fp16: decode and prefill"):
        figures.record("ort_fp16", _decode(lambda: timing.engine_decode(engine, prompts.context, s.new_tokens),
                                           s.decode_repeats),
                       # ONNX Runtime's x86 CPU EP has no fp16 MatMul / MoE kernels: it casts the fp16 weights back
                       # to float32 at session load, so the fp16 engine reads as many bytes as the fp32 one
                       timing.engine_prefill(engine, prompts.long_prompt), step_bytes(figures.config),
                       kv_value_bytes=2)


def _measure_bf16(figures: Figures, ckpt: Path, prompts: Prompts, progress: Progress | None) -> None:
    """bf16 experts on our CPU kernels (the fp32 export, built with --expert-dtype bf16), on each ONNX Runtime
    backend asked for (ort when none is; "ort_bf16", "ort-gqa_bf16"): the peer's bf16 row takes the best."""
    s = figures.settings
    if cpu_kernels.library_path() is None:
        figures.skipped["ort_bf16"] = "bf16 experts need our CPU kernels (python -m mixtral_trt.plugins.cpu_kernels)"
        return
    for backend in _ort_backends(figures):
        engine = runtime.load(_engine_dir(s, ckpt, backend, progress, experts="ours", expert_dtype="bf16"),
                              verify=False)
        with step(progress, f"{backend} bf16 experts (our kernels): decode and prefill"):
            figures.record(f"{backend}_bf16",
                           _decode(lambda e=engine: timing.engine_decode(e, prompts.context, s.new_tokens),
                                   s.decode_repeats),
                           timing.engine_prefill(engine, prompts.long_prompt), _bf16_step_bytes(engine))
        del engine


def _bf16_step_bytes(engine) -> StepBytes:
    """A bf16-expert engine's bytes per step: its LM head and projections in bf16 too where our linears run
    them (the build's default; manifest backend_info["cpu_kernels"]["linears"])."""
    linears = engine.manifest.backend_info.get("cpu_kernels", {}).get("linears", [])
    return step_bytes(engine.config, experts=2, attention=2 if "projections" in linears else 4,
                      head=2 if "lm_head" in linears else 4)


def _ort_backends(figures: Figures) -> list[str]:
    """The ONNX Runtime CPU backends asked for and available (ort when none is)."""
    return [b for b in figures.settings.backends if b in ORT_BACKENDS and b not in figures.skipped] or ["ort"]


def _measure_references(figures: Figures, reference, ckpt: Path, prompts: Prompts,
                        progress: Progress | None) -> None:
    """The torch reference, and HF transformers (eager) when asked for and installed."""
    s, cfg = figures.settings, figures.config
    context, long_prompt = prompts.context, prompts.long_prompt
    with step(progress, "torch reference: decode and prefill"):
        figures.record("torch_ref", _decode(lambda: timing.torch_decode(reference, context, s.new_tokens),
                                            s.decode_repeats),
                       timing.torch_prefill(reference, long_prompt), step_bytes(cfg))
    if s.hf and importlib.util.find_spec("transformers") is not None:
        from transformers import MixtralForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf = MixtralForCausalLM.from_pretrained(ckpt, attn_implementation="eager").eval()
        with step(progress, "HF transformers (eager): decode and prefill"):
            figures.record("hf_transformers", _decode(lambda: timing.hf_decode(hf, context, s.new_tokens),
                                                      s.decode_repeats),
                           timing.hf_prefill(hf, long_prompt), step_bytes(cfg))
        del hf
    elif s.hf:
        figures.skipped["hf_transformers"] = "transformers is not installed"


def _measure_quantized(figures: Figures, ckpt: Path, prompts: Prompts,
                       progress: Progress | None) -> dict[str, dict[str, Any]]:
    """Quantized engines on each ONNX Runtime backend asked for (ort when none is), keyed "BACKEND SCHEME"."""
    s = figures.settings
    quantized = {f"{label} {name}": _quantized(s, ckpt, b, name, prompts.context, prompts.long_prompt,
                                               figures.config, progress, form)
                 for name in s.quantize for b in _ort_backends(figures) for label, form in _variants(s, b)}
    for key, q in quantized.items():
        figures.reads[key] = (q["decode_tok_s"], StepBytes(**q["step_bytes"]))
    return quantized


def _measure_peer(figures: Figures, ckpt: Path, reference, threads: int, quantized: dict[str, dict[str, Any]],
                  progress: Progress | None) -> dict[str, Any]:
    """llama.cpp on the same checkpoint, against our best ONNX Runtime figures."""
    s, cfg = figures.settings, figures.config
    ours, ours_backend = _ours_for_peer(figures.decode, figures.prefill, quantized)
    peer = measure_peer(s, ckpt, reference, cfg, threads, ours, progress)
    peer["ours_backend"] = ours_backend
    for kind, fig in peer["decode_reads"].items():
        # llama-bench runs with its default f16 KV cache
        figures.reads[f"llama.cpp {kind}"] = (fig["tok_s"], StepBytes(fig["fixed"], fig["experts"],
                                                                      _kv_bytes(s, cfg, 2)))
    return peer


def _result(figures: Figures, threads: int, bandwidths: list, quantized: dict[str, dict[str, Any]], moe: MoeLayer,
            peer: dict[str, Any] | None, constrained: dict[str, Any] | None) -> BenchResult:
    """The roofline check of every decode measured, and the run's result."""
    s, cfg = figures.settings, figures.config
    bw = max(bandwidths, key=lambda b: b.gbs)
    check = check_roofline(bw.gbs, figures.reads, last_level_cache_bytes())
    fp32_bytes = replace(step_bytes(cfg), cache=_kv_bytes(s, cfg))
    for q in quantized.values():
        q["decode_roofline_tok_s"] = roofline_tok_s(check["roofline_gbs"], StepBytes(**q["step_bytes"]))
    fields = {
        "preset": s.preset,
        "config": cfg.to_hf_dict(),
        "settings": {**asdict(s), "workdir": str(s.workdir), "threads": threads,
                     "llama_cpp": str(s.llama_cpp) if s.llama_cpp else None},
        "decode": figures.decode,
        "decode_runs": figures.decode_runs,
        "prefill": figures.prefill,
        "token_counts": figures.token_counts,
        "skipped": figures.skipped,
        "moe_layer": moe,
        "memory_bandwidth_gbs": check["roofline_gbs"],
        "bandwidth": {"measurements": [b.to_json() for b in bandwidths], "best_gbs": bw.gbs, "method": bw.method},
        "roofline": check,
        "active_weight_bytes_per_token": fp32_bytes.fixed + fp32_bytes.experts,
        "kv_cache_bytes_per_step": fp32_bytes.cache,
        "decode_roofline_tok_s": roofline_tok_s(check["roofline_gbs"], fp32_bytes),
        "quantized": quantized,
        "peer": peer,
        "constrained": constrained,
        "engine_bytes": {"ort": _dir_bytes(_cache_dirs(s, "ort", experts=(s.experts or (None,))[0])[1])},
        "peak_rss_bytes": system.peak_rss_bytes(),
    }
    return BenchResult(**fields, targets=targets({**fields, "moe_layer": asdict(moe)}))


def _constrained(engine, context: list[int], s: BenchSettings, progress, skipped: dict[str, str]) -> dict | None:
    """Grammar-constrained decoding (JSON schema) on the ort engine: the mask's cost per token."""
    if importlib.util.find_spec("llguidance") is None:
        skipped["constrained"] = "llguidance is not installed (pip install 'mixtral-trt[constrained]')"
        return None

    with step(progress, "ort: constrained decoding (JSON schema)"):
        return constrained_overhead(engine, context, s.new_tokens, s.seed)


ORT_BACKENDS = ("ort", "ort-gqa")  # the ONNX Runtime CPU backends: quantized engines and the peer's "ours"


def _dir_bytes(path: Path) -> int | None:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else None


def _ours_for_peer(decode: dict[str, float], prefill: dict[str, float],
                   quantized: dict[str, dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, str]]:
    """Our figure for each row of the peer comparison ("KIND decode", "KIND prefill"): the best of our ONNX Runtime
    backends measured in this run (fp32: ort / ort-gqa in each expert form measured; fp16: its engine; bf16: its
    engine on each backend;
    int8 / int4: their quantized engines), and which backend gave it."""
    ours = [name for name in decode if name.split(" ")[0] in ORT_BACKENDS]  # "ort", "ort-gqa (moe)", ...
    candidates: dict[str, dict[str, float]] = {
        "fp32 decode": {b: decode[b] for b in ours},
        "fp32 prefill": {b: prefill[b] for b in ours if b in prefill},
    }
    for kind in ("fp16", "bf16"):  # "ort_bf16", "ort-gqa_bf16", ...
        measured = [b for b in ORT_BACKENDS if f"{b}_{kind}" in decode]
        if measured:
            candidates[f"{kind} decode"] = {b: decode[f"{b}_{kind}"] for b in measured}
            candidates[f"{kind} prefill"] = {b: prefill[f"{b}_{kind}"] for b in measured}
    for key, q in quantized.items():
        backend, name = key.rsplit(" ", 1)  # "ort int8", "ort (moe) int8"
        candidates.setdefault(f"{name} decode", {})[backend] = q["decode_tok_s"]
        candidates.setdefault(f"{name} prefill", {})[backend] = q["prefill_tok_s"]
    best = {kind: max(figs, key=figs.get) for kind, figs in candidates.items() if figs}
    return {kind: candidates[kind][b] for kind, b in best.items()}, best


def _quantized(s: BenchSettings, ckpt: Path, backend: str, name: str, context: list[int], long_prompt: list[int], cfg,
               progress, experts: str | None = None) -> dict[str, Any]:
    """An ONNX Runtime engine with weight-only quantized weights: speed, size, bytes read per step."""
    engine_dir = _engine_dir(s, ckpt, backend, progress, quantize=name, experts=experts)
    engine = runtime.load(engine_dir, verify=False)
    with step(progress, f"{backend} {name} ({engine.manifest.backend_info.get('experts')}): decode and prefill"):
        dec, runs = _decode(lambda: timing.engine_decode(engine, context, s.new_tokens), s.decode_repeats)
        pre = timing.engine_prefill(engine, long_prompt)
    spec = engine.contract.extra["quantization"]
    scheme = QuantScheme(spec["bits"], spec["block_size"])
    read = quantized_step_bytes(cfg, scheme, bool(spec.get("dense")))
    return {"backend": backend, "experts": engine.manifest.backend_info.get("experts"), "scheme": scheme.name,
            "dense_quantized": bool(spec.get("dense")),
            "int8_activations_block": engine.manifest.backend_info.get("int8_activations_block"),
            "decode_tok_s": dec.tok_s, "decode_runs": runs, "prefill_tok_s": pre.tok_s,
            "engine_bytes": _dir_bytes(engine_dir),
            "step_bytes": {"fixed": read.fixed, "experts": read.experts, "cache": _kv_bytes(s, cfg)}}


def _kv_bytes(s: BenchSettings, cfg, value_bytes: float = 4) -> float:
    """KV cache a decode step reads, at the mean context of the timed steps."""
    return kv_cache_bytes(cfg, s.context + s.new_tokens / 2, value_bytes)
