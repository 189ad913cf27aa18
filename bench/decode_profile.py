"""Where an ONNX Runtime decode step's time goes: ORT's own profiler, one event per kernel, grouped.

The engine's session is opened with `enable_profiling`; after a `context`-token prefill, `steps` decode
steps run through the runtime's Engine (IO binding, cache kept as OrtValues). Each kernel event of the
decode runs is put in a bucket by its node (the optimized graph tells which node reads which weight):

    moe        MoE / QMoE, or per-expert MatMuls and their routing   lm_head   the MatMul producing `logits`
               (or our library's MoE / MoEBF16 / MoEQ node)                      (or our Linear* node)
    attn_proj  other weight MatMuls (ours: Linear*)  attn_core   QK^T, softmax, AV, mask, GroupQueryAttention,
                                                                 our RaggedAttention
    kv_concat  Concat producing present.*  norm       RMSNorm pieces or fused norms
    rotary     rotary pieces or op        router      the gate Gemm
    elementwise Add / Mul (residuals)     glue        shape ops, casts, the rest

and what is left of each run once its kernels are subtracted is `outside_kernels`: the executor, thread-pool
wake-ups and synchronisation, allocation. Profiling itself adds a little to every node, so the absolute
figures run above an unprofiled step; the split is what this is for.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mixtral_trt.common.manifest import Manifest
from mixtral_trt.exporter.lowering.ort_cpu_kernels import LINEAR_OPS
from mixtral_trt.exporter.lowering.ort_experts import MOE_MARK
from mixtral_trt.runtime.backends.ort import OrtRunner, custom_ops_hook
from mixtral_trt.runtime.engine import Engine

BUCKETS = ("moe", "lm_head", "attn_proj", "attn_core", "kv_concat", "norm", "rotary", "router", "elementwise",
           "embed", "glue")
_NORM = {"Pow", "ReduceMean", "Sqrt", "Reciprocal", "Div", "SimplifiedLayerNormalization",
         "SkipSimplifiedLayerNormalization", "RMSNormalization"}
_ROTARY = {"Neg", "Split", "Sin", "Cos", "RotaryEmbedding"}
_ATTN = {"Softmax", "Where", "GroupQueryAttention", "MultiHeadAttention", "Attention", "RaggedAttention"}


def bucket_of(op: str, output: str, reads_weight: bool, name: str = "") -> str:
    """The bucket of one node: its op type, its first output's name, whether its 2nd input is a weight, its name
    (the nodes of a layer's per-expert MatMuls carry MOE_MARK: lowering/ort_experts.py)."""
    if op in ("MoE", "QMoE", "MoEBF16", "MoEQ") or MOE_MARK in name:  # ONNX Runtime's ops and ours (mixtral.cpu)
        return "moe"
    if op in ("MatMul", "MatMulNBits", "FusedMatMul", "Gemm", *LINEAR_OPS):  # ours (mixtral.cpu) too
        if output == "logits":
            return "lm_head"
        if op == "Gemm":
            return "router"
        return "attn_proj" if reads_weight else "attn_core"
    if op == "Concat" and output.startswith("present."):
        return "kv_concat"
    for name, ops in (("norm", _NORM), ("rotary", _ROTARY), ("attn_core", _ATTN)):
        if op in ops:
            return name
    if op in ("Add", "Mul"):
        return "elementwise"
    return "embed" if op == "Gather" else "glue"


def summarize(events: list[dict], nodes: dict[str, tuple[str, str, bool]], skip_runs: int) -> dict[str, Any]:
    """Profile events -> mean ms per run in each bucket, over the model runs after the first `skip_runs`."""
    runs = [e for e in events if e.get("name") == "model_run"][skip_runs:]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    buckets: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    wall = inside = 0.0
    for run in runs:
        start, end = run["ts"], run["ts"] + run["dur"]
        wall += run["dur"]
        for k in kernels:
            if start <= k["ts"] <= end:
                name = k["name"][: -len("_kernel_time")]
                op, output, weight = nodes.get(name, (k.get("args", {}).get("op_name", "?"), "", False))
                buckets[bucket_of(op, output, weight, name)] += k["dur"]
                ops[op] += k["dur"]
                inside += k["dur"]
    n = max(len(runs), 1)
    ms = {b: buckets.get(b, 0.0) / n / 1000 for b in BUCKETS}
    return {"runs": len(runs), "step_ms": wall / n / 1000, "kernels_ms": inside / n / 1000,
            "outside_kernels_ms": (wall - inside) / n / 1000, "buckets_ms": ms,
            "ops_ms": dict(sorted(((o, t / n / 1000) for o, t in ops.items()), key=lambda x: -x[1]))}


def profile_decode(engine_dir: str | Path, context: int = 128, steps: int = 32, threads: int | None = None,
                   seed: int = 0, batch: int = 1) -> dict[str, Any]:
    """Profile `steps` decode steps of an ONNX Runtime engine directory (see the module docstring)."""
    import onnx

    engine_dir = Path(engine_dir)
    manifest = Manifest.load(engine_dir, verify=False)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"

        def hook(so) -> None:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "decode")
            so.optimized_model_filepath = str(optimized)

        runner = OrtRunner(engine_dir / manifest.model_file, device="cpu", threads=threads,
                           session_options_hook=custom_ops_hook(manifest, engine_dir, hook))
        engine = Engine(engine_dir, manifest, runner)
        rng = np.random.default_rng(seed)
        out, cache = engine.forward(rng.integers(3, engine.config.vocab_size, (batch, context)))
        tokens = out["logits"][:, -1].argmax(-1)[:, None]  # [B, 1]
        for _ in range(steps):
            out, cache = engine.forward(tokens, cache)
            tokens = out["logits"][:, -1].argmax(-1)[:, None]
        trace = Path(runner.session.end_profiling())
        events = json.loads(trace.read_text())
        model = onnx.load(str(optimized), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    nodes = {n.name: (n.op_type, n.output[0] if n.output else "", len(n.input) > 1 and n.input[1] in weights)
             for n in model.graph.node}
    return {"engine": str(engine_dir), "context": context, "steps": steps, "batch": batch,
            **summarize(events, nodes, skip_runs=1)}
