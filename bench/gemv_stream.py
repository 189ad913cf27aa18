"""How fast one core streams weights through our linear ops at decode, per weight format, beyond the caches.

    python -m mixtral_trt.bench.gemv_stream [--mb 600] [--k 768] [--formats fp32,bf16,int8,int4] [--rounds 7]
                                            [--threads 1] [--isa avx512]

Decode at batch 1 reads every active weight once per token, so what bounds it is the rate at which the cores
stream weights, not the dot products. Per format one one-node session of the library's op (Linear, LinearBF16,
LinearQ with common/quant.py's default block) over one weight of about `mb` MB (default 600: beyond this host's
480 MB L3, so every call reads memory), called with one activation row; beside them numpy summing a float32
buffer of the same size in one thread (`read`: the core's plain sequential read rate). Rounds alternate all of
them; each figure is a call's CPU time of this process (with 1 thread the op's own time, so other processes'
load counts less), best and median over the rounds, in GB/s (1e9 weight bytes, scales included). Weights are a
random block of 4096 rows repeated (streaming does not depend on the values). Prints one JSON object.

K inputs, N weight rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import DEFAULT_BLOCK, QuantScheme
from mixtral_trt.plugins import cpu_kernels

from .cpu_linears import one_node_session

FORMATS = ("fp32", "bf16", "int8", "int4")
OPS = {"fp32": "Linear", "bf16": "LinearBF16", "int8": "LinearQ", "int4": "LinearQ"}
BLOCK_ROWS = 4096
AGREE = {"fp32": 1e-5, "bf16": 2e-2, "int8": 5e-2, "int4": 2e-1}  # the weight format's rounding, not the kernel's


def linear_model(fmt: str, n: int, k: int):
    """One node y [1, N] = x [1, K] Wᵀ of the library's op for `fmt`, W about n x k; and its weight bytes."""
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    reps = -(-n // BLOCK_ROWS)
    block = (np.random.default_rng(0).standard_normal((BLOCK_ROWS, k)) / np.sqrt(k)).astype(np.float32)
    attributes = {}
    if fmt == "fp32":
        inits = [numpy_helper.from_array(np.tile(block, (reps, 1)), "w")]
    elif fmt == "bf16":
        bits = np.tile(block.astype(ml_dtypes.bfloat16).view(np.uint16), (reps, 1))
        inits = [helper.make_tensor("w", TensorProto.BFLOAT16, bits.shape, bits.tobytes(), raw=True)]
    else:
        scheme = QuantScheme(8 if fmt == "int8" else 4, DEFAULT_BLOCK[fmt])
        codes, scales = scheme.quantize(block)
        inits = [numpy_helper.from_array(np.tile(codes, (reps, 1)), "codes"),
                 numpy_helper.from_array(np.tile(scales, (reps, 1)), "scales")]
        attributes = {"bits": scheme.bits, "block_size": scheme.block_size}
    nbytes = sum(len(t.raw_data) for t in inits)
    rows = reps * BLOCK_ROWS
    node = helper.make_node(OPS[fmt], ["x", *(t.name for t in inits)], ["y"], domain=cpu_kernels.DOMAIN, **attributes)
    graph = helper.make_graph([node], "gemv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(cpu_kernels.DOMAIN, 1)])
    return model, nbytes, block


def _check(fmt: str, session, x: np.ndarray, block: np.ndarray) -> None:
    """The op's first rows against x Wᵀ in float64 over the unrounded block: the bench times a correct GEMV."""
    got = session.run(None, {"x": x})[0][0, :BLOCK_ROWS]
    want = block.astype(np.float64) @ x[0].astype(np.float64)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    if err > AGREE[fmt]:
        raise MixtralTrtError(f"{fmt}: the op's output is {err:.2e} (relative) from x Wᵀ, over {AGREE[fmt]:.0e}")


def _cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def stream_rates(formats: tuple[str, ...] = FORMATS, mb: float = 600, k: int = 768, rounds: int = 7,
                 threads: int = 1) -> dict:
    """GB/s per format (best / median of `rounds` alternating calls, CPU time) and numpy's one-thread read."""
    if cpu_kernels.library_path() is None:
        raise MixtralTrtError("our CPU kernels' library is not built (python -m mixtral_trt.plugins.cpu_kernels)")
    readers, sizes = {}, {}
    x = np.random.default_rng(1).standard_normal((1, k)).astype(np.float32)
    for fmt in formats:
        row_bytes = {"fp32": 4 * k, "bf16": 2 * k}.get(fmt, k * (8 if fmt == "int8" else 4) // 8
                                                       + 4 * k // DEFAULT_BLOCK.get(fmt, 32))
        model, sizes[fmt], block = linear_model(fmt, max(1, int(mb * 1e6) // row_bytes), k)
        session = one_node_session(model, threads)
        del model
        _check(fmt, session, x, block)
        readers[fmt] = lambda s=session: s.run(None, {"x": x})
    buf = np.ones(int(mb * 1e6) // 4, np.float32)
    readers["read"], sizes["read"] = buf.sum, buf.nbytes
    for fn in readers.values():
        fn()  # warm-up: first touch, prepacking
    samples: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(rounds):
        for name, fn in readers.items():
            samples[name].append(sizes[name] / _cpu_seconds(fn) / 1e9)
    library = cpu_kernels.library_path()
    return {"settings": {"mb": mb, "k": k, "rounds": rounds, "threads": threads},
            "cpu_kernels": {"library": str(library), "isa": cpu_kernels.isa(library)},
            "load_average": os.getloadavg(),
            "gbs": {name: {"best": max(v), "median": statistics.median(v), "bytes": sizes[name]}
                    for name, v in samples.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--mb", type=float, default=600.0)
    parser.add_argument("--k", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--isa", help="force an instruction-set path (MIXTRAL_TRT_CPU_ISA)")
    args = parser.parse_args(argv)
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise SystemExit(f"--formats {args.formats!r}: choose from {', '.join(FORMATS)}")
    if args.isa:
        os.environ[cpu_kernels.ISA_ENV] = args.isa
    try:
        result = stream_rates(formats, args.mb, args.k, args.rounds, args.threads)
    except MixtralTrtError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
