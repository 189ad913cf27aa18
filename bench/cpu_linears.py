"""Our linear ops against ONNX Runtime's, one node each, alternating: `mixtral-export bench-cpu-linears`.

A whole decode step on a shared 2-core machine swings 5-10x with the load; a single linear timed over many
short calls in turn with ONNX Runtime's gives a best-of that holds. Per weight format and the `small` preset's
shapes (the LM head N = vocab, and the attention projections wq / wo N = K = hidden, wk / wv N = kv width),
one-node sessions of the same weight:

    fp32   ours Linear(x, W)                    ONNX Runtime MatMul(x, Transpose(W)) (folded and packed at load)
    bf16   ours LinearBF16(x, W in bf16)        the fp32 MatMul (ONNX Runtime has no bf16 CPU MatMul)
    int8 / int4   ours LinearQ(x, codes, scales)   MatMulNBits over the same bytes, accuracy_level 4

at T = 1, 8 and 512 rows. In an engine a decode step streams every layer's weights, so a linear's weight is
never in L2 when its turn comes: each side gets as many copies of the node (distinct weights) as exceed L2
(`L2_BYTES`), and one sample is one call of each copy in turn (mean per call); best and median over `rounds`
samples, ours and ONNX Runtime's alternating. T rows, K inputs, N outputs.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.progress import step
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref import get_preset
from mixtral_trt.plugins import cpu_kernels

FORMATS = ("fp32", "bf16", "int8", "int4")
L2_BYTES = 8 << 20  # more than this machine's L2 (2 MiB per core) and far less than its L3
OPS = {"fp32": "Linear", "bf16": "LinearBF16", "int8": "LinearQ", "int4": "LinearQ"}


def shapes_of(preset: str) -> dict[str, tuple[int, int]]:
    """name -> (N, K) of the preset's linears."""
    cfg = get_preset(preset)
    h = cfg.hidden_size
    return {"lm_head": (cfg.vocab_size, h), "wq/wo": (h, h), "wk/wv": (cfg.num_kv_heads * cfg.head_dim, h)}


def _models(fmt: str, n: int, k: int, block: int, seed: int = 0) -> tuple[Any, Any]:
    """(ours, ONNX Runtime's) one-node models y = x Wᵀ over the same random weight."""
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    from mixtral_trt.exporter.lowering.ort_quant import ACCURACY_LEVEL

    w = (np.random.default_rng(seed).standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", n])

    def model(nodes, inits, domain):
        graph = helper.make_graph(nodes, "linear", [x], [y], initializer=inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])

    if fmt in ("fp32", "bf16"):
        ort_model = model([helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
                           helper.make_node("MatMul", ["x", "wt"], ["y"])], [numpy_helper.from_array(w, "w")], "")
        if fmt == "fp32":
            ours = model([helper.make_node("Linear", ["x", "w"], ["y"], domain=cpu_kernels.DOMAIN)],
                         [numpy_helper.from_array(w, "w")], cpu_kernels.DOMAIN)
        else:
            b = w.astype(ml_dtypes.bfloat16)
            init = helper.make_tensor("w", TensorProto.BFLOAT16, b.shape, b.view(np.uint16).tobytes(), raw=True)
            ours = model([helper.make_node("LinearBF16", ["x", "w"], ["y"], domain=cpu_kernels.DOMAIN)], [init],
                         cpu_kernels.DOMAIN)
        return ours, ort_model
    scheme = QuantScheme(8 if fmt == "int8" else 4, block)
    codes, scales = scheme.quantize(w)
    ours = model([helper.make_node("LinearQ", ["x", "codes", "scales"], ["y"], domain=cpu_kernels.DOMAIN,
                                   bits=scheme.bits, block_size=block)],
                 [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(scales, "scales")],
                 cpu_kernels.DOMAIN)
    b = codes.reshape(n, k // block, block * scheme.bits // 8)
    nbits = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n,
                             bits=scheme.bits, block_size=block, accuracy_level=ACCURACY_LEVEL[scheme.bits])
    ort_model = model([nbits], [numpy_helper.from_array(b, "b"), numpy_helper.from_array(scales.reshape(-1), "s")],
                      "com.microsoft")
    return ours, ort_model


def _session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    cpu_kernels.register(so)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _sample_ms(sessions: list, x: np.ndarray) -> float:
    start = time.perf_counter()
    for sess in sessions:
        sess.run(None, {"x": x})
    return (time.perf_counter() - start) * 1e3 / len(sessions)


def compare_linears(preset: str = "small", formats: tuple[str, ...] = FORMATS, threads: int = 2, rounds: int = 30,
                    rows: tuple[int, ...] = (1, 8, 512), block: int = 32, progress=None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for fmt in formats:
        for name, (n, k) in shapes_of(preset).items():
            copies = max(1, -(-L2_BYTES // (n * k * {"fp32": 4, "bf16": 2}.get(fmt, 1))))
            pairs = [_models(fmt, n, k, block, seed) for seed in range(copies)]
            ours, theirs = ([_session(p[i], threads) for p in pairs] for i in (0, 1))
            for t in rows:
                x = np.random.default_rng(1).standard_normal((t, k)).astype(np.float32)
                np.testing.assert_allclose(ours[0].run(None, {"x": x})[0], theirs[0].run(None, {"x": x})[0],
                                           rtol=0, atol=5e-2 if fmt in ("int8", "int4") else 1e-2)
                samples: dict[str, list[float]] = {"ours": [], "ort": []}
                with step(progress, f"{fmt} {name} T={t}: {rounds} rounds over {copies} copies"):
                    for _ in range(rounds):
                        samples["ours"].append(_sample_ms(ours, x))
                        samples["ort"].append(_sample_ms(theirs, x))
                row = {s: {"best_ms": min(v), "median_ms": statistics.median(v)} for s, v in samples.items()}
                row["speedup"] = {stat: row["ort"][f"{stat}_ms"] / row["ours"][f"{stat}_ms"]
                                  for stat in ("best", "median")}
                results[f"{fmt} {name} [{n}x{k}] T={t}"] = {**row, "copies": copies}
    library = cpu_kernels.library_path()
    return {"settings": {"preset": preset, "threads": threads, "rounds": rounds, "rows": list(rows), "block": block},
            "cpu_kernels": {"library": str(library), "isa": cpu_kernels.isa(library)},
            "load_average": os.getloadavg(), "results": results}


# ---- the quantized GEMM kernel alone, M activation rows --------------------------------------------------------
def kernel_rates(libraries: list[str], formats: tuple[str, ...] = ("int8", "int4"),
                 rows: tuple[int, ...] = (1, 2, 4, 8), n: int = 1024, k: int = 768, block: int = 32, rounds: int = 7,
                 target_s: float = 0.05) -> dict[str, Any]:
    """Gweights/s per thread (N * K weights per call / the calling thread's CPU time) of each library's int8 / int4
    GEMM kernel (the ISA it selects here: MIXTRAL_TRT_CPU_ISA) over M activation rows, weights in L2 (N x K codes,
    N 1024, K 768: 0.4 / 0.8 MB), through the library's `mixtral_cpu_time_gemm_q`; libraries alternate call by call
    (`libraries`: e.g. a build before a change and after it), best and median of `rounds`."""
    import ctypes

    fns = {}
    for path in libraries:
        fn = ctypes.CDLL(str(path)).mixtral_cpu_time_gemm_q
        fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_int] * 6
        fns[str(path)] = fn
    results: dict[str, Any] = {}
    for fmt in formats:
        bits = 8 if fmt == "int8" else 4
        for m in rows:
            first = next(iter(fns.values()))
            reps = max(1, int(target_s / max(first(bits, m, n, k, block, 3) / 3, 1e-7)))
            samples: dict[str, list[float]] = {p: [] for p in fns}
            for _ in range(rounds):
                for p, fn in fns.items():
                    seconds = fn(bits, m, n, k, block, reps)
                    if seconds < 0:
                        raise MixtralTrtError(f"{p}: mixtral_cpu_time_gemm_q refused {fmt} M={m} N={n} K={k} B={block}")
                    samples[p].append(n * k * reps / seconds / 1e9)
            results[f"{fmt} M={m}"] = {p: {"best": max(v), "median": statistics.median(v)} for p, v in samples.items()}
    return {"settings": {"n": n, "k": k, "block": block, "rounds": rounds, "isa": os.environ.get(cpu_kernels.ISA_ENV)},
            "load_average": os.getloadavg(), "results": results}


def main(argv: list[str] | None = None) -> None:
    """python -m mixtral_trt.bench.cpu_linears --kernel [--library PATH ...] [--rows 1,2,4,8] [--formats int8,int4]"""
    import argparse

    parser = argparse.ArgumentParser(description="the quantized GEMM kernel alone, Gweights/s per thread")
    parser.add_argument("--library", action="append", help="a cpu_kernels library (repeat to alternate; default: "
                        "the built one)")
    parser.add_argument("--rows", default="1,2,4,8")
    parser.add_argument("--formats", default="int8,int4")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--k", type=int, default=768)
    args = parser.parse_args(argv)
    libraries = args.library or [str(cpu_kernels.require_library())]
    result = kernel_rates(libraries, tuple(args.formats.split(",")), tuple(int(r) for r in args.rows.split(",")),
                          args.n, args.k, rounds=args.rounds)
    print(f"Gweights/s per thread, best / median of {args.rounds} (load average {result['load_average'][0]:.1f})")
    for name, row in result["results"].items():
        print(f"  {name:10s} " + "   ".join(f"{v['best']:6.1f} / {v['median']:6.1f}" for v in row.values()))
    print("  columns: " + ", ".join(row))


if __name__ == "__main__":
    main()
