"""Triton's JIT compiles each kernel variant once per argument specialization (integers equal to 1 or divisible by
16 are specialized), one at a time in a process: about three minutes for every plugin variant, half the check's
budget. `start()` compiles them in parallel worker processes beforehand, each launching the kernels on tiny
tensors whose integer arguments specialize as the real sizes' do (E = 8, k = 2, H and I multiples of 16, the same
token counts), so Triton's on-disk cache holds every variant when the phases launch them. GPU only.

The workers also compile the ahead-of-time variants (aot.default_variants) for this GPU and driver, as each
registration's aot_impl does in phase 3 (Triton's cache again).

    python -m mixtral_trt.bench.device_check.warmup '<json: {"jit": [[dtype, quant, tactic], ...], "aot": [i, ...]}>'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from mixtral_trt.plugins.aot import compile_variant, default_variants, target
from mixtral_trt.plugins.interpreter import require_compiler
from mixtral_trt.plugins.tiles import TACTICS

from . import cases
from .cases import QUANTS, REL_TOL

TOKENS = (1, 8, 32, 64, 512, 4096)  # phases 2 and 4's token counts (and the model check's prompt)


def jobs() -> list[tuple[str, str | None, int]]:
    return [(dtype, quant, tactic) for quant in QUANTS for dtype in REL_TOL for tactic in TACTICS]


class Warmup:
    def __init__(self, processes: list[subprocess.Popen], start: float) -> None:
        self.processes, self.start = processes, start

    def wait(self, timeout: float) -> dict[str, object]:
        """Wait up to `timeout` seconds; what the warm-up did (workers still running are stopped)."""
        deadline = time.perf_counter() + timeout
        codes = []
        for p in self.processes:
            try:
                codes.append(p.wait(max(0.0, deadline - time.perf_counter())))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append("stopped: out of time")
        return {"workers": len(self.processes), "exit_codes": codes,
                "seconds": round(time.perf_counter() - self.start, 1)}


def start(workers: int | None = None) -> Warmup:
    """Compile every variant in `workers` processes (default: half the CPUs, at most 8)."""
    workers = workers or max(1, min(8, (os.cpu_count() or 2) // 2))
    todo = jobs()
    n_aot = len(default_variants())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("TRITON_INTERPRET", None)
    processes = [subprocess.Popen([sys.executable, "-m", "mixtral_trt.bench.device_check.warmup",
                                   json.dumps({"jit": todo[i::workers], "aot": list(range(n_aot))[i::workers]})],
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(workers)]
    return Warmup(processes, time.perf_counter())


def compile_job(dtype: str, quant: str | None, tactic: int) -> None:
    import torch

    from mixtral_trt.plugins.moe_align.launch import run as align
    from mixtral_trt.plugins.moe_router.launch import run as router
    from mixtral_trt.plugins.pipeline import sparse_experts, sparse_experts_q

    shape = cases.SHAPES["tiny"]
    w13, w2 = cases.float_experts(shape, dtype, "cuda")
    group, bits = cases.group_for(quant), QUANTS[quant]
    if quant:
        c13 = cases.random_codes(shape.experts, 2 * shape.inter, shape.hidden, bits, group, dtype, "cuda")
        c2 = cases.random_codes(shape.experts, shape.hidden, shape.inter, bits, group, dtype, "cuda")
    for t in TOKENS:
        logits = cases.router_logits(t, shape.experts, "cuda").to(cases.torch_dtype(dtype))
        x = torch.randn(t, shape.hidden, device="cuda").to(cases.torch_dtype(dtype))
        weights, experts = router(logits, shape.top_k)
        align(experts, shape.experts, 64)
        if quant:
            sparse_experts_q(x, experts, weights, *c13, *c2, bits, group, tactic=tactic)
        else:
            sparse_experts(x, experts, weights, w13, w2, tactic=tactic)
    torch.cuda.synchronize()


def main() -> int:
    require_compiler()
    request = json.loads(sys.argv[1])
    for dtype, quant, tactic in request["jit"]:
        compile_job(dtype, quant, tactic)
    variants, where = default_variants(), target()
    for i in request["aot"]:
        compile_variant(variants[i], where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
