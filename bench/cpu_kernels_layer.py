"""One MoE layer on our CPU kernels alone, per expert dtype and per instruction-set path, in one process.

    python -m mixtral_trt.bench.cpu_kernels_layer [--preset small] [--tokens 512] [--isas amx,avx512]
                                                  [--dtypes fp32,bf16,int8,int4] [--threads 1] [--repeats 5]

Each path is forced in turn (MIXTRAL_TRT_CPU_ISA, read at session creation) on the same one-node model (the
plugins/cpu_kernels op of the dtype: MoE, MoEBF16, MoEQ with common/quant.py's default blocks); each figure is the
best of `repeats` runs in CPU time of this process (so that other processes' load on a shared machine counts
less; with 1 thread that is the op's own time). Weights N(0, 1/sqrt(fan-in)), router logits N(0, 1). The paths'
outputs must agree (AGREE of the largest value: int8 / int4 activation codes can flip in the last bit between
paths) or it is an error: the figures time the same layer. Prints one JSON object: {dtype: {isa: ms}}.

T tokens, H hidden, I intermediate, E experts.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import DEFAULT_BLOCK, QuantScheme
from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.plugins import cpu_kernels

OPS = {"fp32": "MoE", "bf16": "MoEBF16", "int8": "MoEQ", "int4": "MoEQ"}
AGREE = 1e-2


def layer_model(dtype: str, hidden: int, inter: int, experts: int, top_k: int, seed: int = 0):
    """x [T, H], router_logits [T, E] -> y [T, H] through the library's op for `dtype`."""
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w13 = (rng.standard_normal((experts, 2 * inter, hidden)) / np.sqrt(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((experts, hidden, inter)) / np.sqrt(inter)).astype(np.float32)
    attributes = {"k": top_k}
    if dtype == "fp32":
        inits = [numpy_helper.from_array(w13, "w13"), numpy_helper.from_array(w2, "w2")]
    elif dtype == "bf16":
        inits = [helper.make_tensor(n, TensorProto.BFLOAT16, a.shape, a.astype(ml_dtypes.bfloat16).view(np.uint16)
                                    .tobytes(), raw=True) for n, a in (("w13", w13), ("w2", w2))]
    else:
        scheme = QuantScheme(8 if dtype == "int8" else 4, DEFAULT_BLOCK[dtype])
        (c13, s13), (c2, s2) = scheme.quantize(w13), scheme.quantize(w2)
        inits = [numpy_helper.from_array(a, n) for n, a in (("w13", c13), ("w2", c2), ("s13", s13), ("s2", s2))]
        attributes.update(bits=scheme.bits, block_size=scheme.block_size)
    node = helper.make_node(OPS[dtype], ["x", "router_logits", *(i.name for i in inits)], ["y"],
                            domain=cpu_kernels.DOMAIN, **attributes)
    graph = helper.make_graph(
        [node], "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", hidden]),
                        helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", experts])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(cpu_kernels.DOMAIN, 1)])


def layer_cpu_ms(preset: str = "small", tokens: int = 512, isas: tuple[str, ...] = ("amx", "avx512"),
                 dtypes: tuple[str, ...] = ("fp32", "bf16", "int8", "int4"), threads: int = 1,
                 repeats: int = 5) -> dict[str, dict[str, float]]:
    """{dtype: {isa: best CPU ms}} of one MoE layer of `preset` over `tokens` tokens."""
    import onnxruntime as ort

    from mixtral_trt.plugins.cpu_kernels.build import build

    library = build()
    cfg = get_preset(preset)
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((tokens, cfg.hidden_size)).astype(np.float32),
            "router_logits": rng.standard_normal((tokens, cfg.num_experts)).astype(np.float32)}
    out: dict[str, dict[str, float]] = {}
    before = os.environ.get(cpu_kernels.ISA_ENV)
    try:
        for dtype in dtypes:
            model = layer_model(dtype, cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.top_k)
            out[dtype] = {}
            first = None
            for isa in isas:
                os.environ[cpu_kernels.ISA_ENV] = isa
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                cpu_kernels.register(so, library)
                sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
                y = sess.run(None, feed)[0]
                first = (isa, y) if first is None else first
                scale = max(float(np.abs(first[1]).max()), 1e-30)
                if not np.abs(y - first[1]).max() <= AGREE * scale:
                    raise MixtralTrtError(f"cpu_kernels_layer: {dtype} on {isa} disagrees with {first[0]} (max "
                                          f"{np.abs(y - first[1]).max() / scale:.1e} of the largest value)")
                best = float("inf")
                for _ in range(repeats):
                    start = time.process_time()
                    sess.run(None, feed)
                    best = min(best, time.process_time() - start)
                out[dtype][isa] = round(best * 1000, 1)
    finally:
        if before is None:
            os.environ.pop(cpu_kernels.ISA_ENV, None)
        else:
            os.environ[cpu_kernels.ISA_ENV] = before
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--isas", default="amx,avx512")
    p.add_argument("--dtypes", default="fp32,bf16,int8,int4")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    print(json.dumps(layer_cpu_ms(a.preset, a.tokens, tuple(a.isas.split(",")), tuple(a.dtypes.split(",")),
                                  a.threads, a.repeats)))


if __name__ == "__main__":
    main()
