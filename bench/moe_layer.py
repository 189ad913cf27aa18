"""The MoE layer alone, sparse dispatch vs dense all-experts, on the preset's dimensions.

sparse : the `ort` lowering's CPU form, one MatMul pair per expert (lowering/ort_experts.py) — only the
         routed experts' rows run
moe_op : the same lowering's com.microsoft::MoE form (ONNX Runtime's fused kernel)
dense  : the `portable` lowering (the function body: every expert on every token)
torch  : the reference's eager op (sparse loop over the routed experts), for scale
T tokens; weights N(0, 0.02); router logits N(0, 1), so tokens spread over the experts.
"""

from __future__ import annotations

import time

import numpy as np

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.exporter.lowering import lower
from mixtral_trt.runtime.backends.ort import session_options


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def moe_layer_ms(cfg: MixtralConfig, tokens: tuple[int, ...] = (1, 512), seed: int = 0,
                 threads: int | None = None) -> dict[str, dict[str, float]]:
    """{str(T): {"sparse_ms", "moe_op_ms", "dense_ms", "torch_sparse_ms"}} for each T."""
    import onnx_ir as ir
    import onnxruntime as ort
    import torch

    from mixtral_trt.exporter.ops.layer_model import moe_layer_model
    from mixtral_trt.mixtral_ref import moe  # noqa: F401  (registers torch.ops.mixtral)

    rng = np.random.default_rng(seed)
    e, h, i = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
    w13 = (rng.standard_normal((e, 2 * i, h)) * 0.02).astype(np.float32)  # [E, 2I, H]
    w2 = (rng.standard_normal((e, h, i)) * 0.02).astype(np.float32)  # [E, H, I]
    sessions = {}
    for name, target, options in (("sparse_ms", "ort", {"experts": "matmul"}), ("moe_op_ms", "ort", {"experts": "moe"}),
                                  ("dense_ms", "portable", {})):
        model = ir.to_proto(lower(ir.from_proto(moe_layer_model("fp32", cfg.top_k, w13, w2)), target, **options))
        sessions[name] = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                              providers=["CPUExecutionProvider"])
    t13, t2 = torch.from_numpy(w13), torch.from_numpy(w2)
    result = {}
    for t in tokens:
        feeds = {"router_logits": rng.standard_normal((t, e)).astype(np.float32),
                 "x": rng.standard_normal((t, h)).astype(np.float32)}
        repeats = 50 if t <= 8 else 5
        row = {name: _median_ms(lambda s=s, f=feeds: s.run(None, f), repeats) for name, s in sessions.items()}
        x, logits = torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["router_logits"])

        def eager(x=x, logits=logits):
            with torch.inference_mode():
                weights, experts = torch.ops.mixtral.moe_router(logits, cfg.top_k)
                return torch.ops.mixtral.moe_experts(x, experts, weights, t13, t2)

        row["torch_sparse_ms"] = _median_ms(eager, repeats)
        result[str(t)] = row
    return result
