"""Shared builders for the cpu_kernels tests: the library (built once, or skipped with the reason), one-node
models of its ops, random expert weights in each dtype, and the oracles (mixtral_ref's dense experts_reference;
for int8 / int4 its MoEA8 block, the int8-activation reference parity uses).

T tokens, H hidden, I intermediate, E experts, k experts per token, B quantization block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.plugins import cpu_kernels

DTYPES = ("fp32", "bf16", "int8", "int4")


def cases_by_dtype(cases, float_only) -> list[tuple[str, str]]:
    """(dtype, case name) pairs: every case for float weights; `float_only` cases (shapes no block divides)
    not for the quantized ones, whose format needs multiples of the block."""
    return [(d, c) for d in DTYPES for c in [*cases, *float_only] if c not in float_only or d in ("fp32", "bf16")]



def weight_as_graph_input(model, index: int) -> None:
    """Initializer `index` of `model` made a graph input of the same name, type and shape (a weight our ops
    refuse: they prepack constants at session creation)."""
    from onnx import helper

    w = model.graph.initializer.pop(index)
    model.graph.input.append(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)))

OP_OF = {"fp32": "MoE", "bf16": "MoEBF16", "int8": "MoEQ", "int4": "MoEQ"}


def library_or_skip() -> Path:
    """The library: $MIXTRAL_TRT_CPU_KERNELS (the sanitizer run), else built now (a no-op when up to date)."""
    if os.environ.get(cpu_kernels.LIBRARY_ENV):
        path = cpu_kernels.library_path()
        assert path is not None, f"{cpu_kernels.LIBRARY_ENV} names no file"
        return path
    from mixtral_trt.plugins.cpu_kernels.build import build

    try:
        return build()
    except MixtralTrtError as e:
        pytest.skip(f"the cpu_kernels library cannot be built here: {e}")


@dataclass(frozen=True)
class Case:
    T: int
    H: int
    I: int  # noqa: E741
    E: int
    k: int
    seed: int = 0


@dataclass
class Experts:
    """One layer's inputs in `dtype` (float32 oracle weights beside the op's initializers)."""

    dtype: str
    x: np.ndarray  # [T, H]
    logits: np.ndarray  # [T, E]
    w13: np.ndarray  # [E, 2I, H] float32, as the op's weights decode
    w2: np.ndarray  # [E, H, I]
    initializers: list
    attributes: dict


def make_experts(case: Case, dtype: str, block: int = 32) -> Experts:
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(case.seed)
    x = rng.standard_normal((case.T, case.H)).astype(np.float32)
    logits = rng.standard_normal((case.T, case.E)).astype(np.float32)
    w13 = (rng.standard_normal((case.E, 2 * case.I, case.H)) / np.sqrt(case.H)).astype(np.float32)
    w2 = (rng.standard_normal((case.E, case.H, case.I)) / np.sqrt(case.I)).astype(np.float32)
    attributes = {"k": case.k}
    if dtype == "fp32":
        inits = [numpy_helper.from_array(w13, "w13"), numpy_helper.from_array(w2, "w2")]
    elif dtype == "bf16":
        b13, b2 = w13.astype(ml_dtypes.bfloat16), w2.astype(ml_dtypes.bfloat16)
        w13, w2 = b13.astype(np.float32), b2.astype(np.float32)
        inits = [helper.make_tensor(name, TensorProto.BFLOAT16, a.shape, a.view(np.uint16).tobytes(), raw=True)
                 for name, a in (("w13", b13), ("w2", b2))]
    else:
        scheme = QuantScheme(8 if dtype == "int8" else 4, block)
        (c13, s13), (c2, s2) = scheme.quantize(w13), scheme.quantize(w2)
        w13, w2 = scheme.dequantize(c13, s13), scheme.dequantize(c2, s2)
        inits = [numpy_helper.from_array(a, n) for n, a in (("w13", c13), ("w2", c2), ("s13", s13), ("s2", s2))]
        attributes.update(bits=scheme.bits, block_size=block)
    return Experts(dtype, x, logits, w13, w2, inits, attributes)


def moe_model(ex: Experts, node_name: str = "moe0", x_shape=("T", None)):
    """A one-node model: y = mixtral.cpu::<op>(x, router_logits, weights...)."""
    from onnx import TensorProto, helper

    h = ex.x.shape[1]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [d if d is not None else h for d in x_shape])
    logits = helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", ex.logits.shape[1]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(OP_OF[ex.dtype], ["x", "router_logits", *(i.name for i in ex.initializers)], ["y"],
                            domain=cpu_kernels.DOMAIN, name=node_name, **ex.attributes)
    graph = helper.make_graph([node], "moe", [x, logits], [y], initializer=ex.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(cpu_kernels.DOMAIN, 1)])


def session(model, library: Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    cpu_kernels.register(so, library)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_op(ex: Experts, library: Path, threads: int = 2) -> np.ndarray:
    return session(moe_model(ex), library, threads).run(None, {"x": ex.x, "router_logits": ex.logits})[0]


def oracle(ex: Experts, block: int = 32) -> np.ndarray:
    """fp32 / bf16: experts_reference (dense) on the weights as stored; int8 / int4: mixtral_ref's MoEA8 block
    (int8 activations in blocks, as the ops compute) with the dequantized weights, its router fed the logits."""
    import torch

    from mixtral_trt.mixtral_ref.moe import experts_reference, router_reference
    from mixtral_trt.mixtral_ref.presets import get_preset
    from mixtral_trt.mixtral_ref.quantized import MoEA8

    k = ex.attributes["k"]
    x, logits = torch.from_numpy(ex.x), torch.from_numpy(ex.logits)
    if ex.dtype in ("fp32", "bf16"):
        weights, experts = router_reference(logits, k)
        return experts_reference(x, experts, weights, torch.from_numpy(ex.w13), torch.from_numpy(ex.w2)).numpy()
    e, two_i, h = ex.w13.shape
    cfg = replace(get_preset("tiny"), hidden_size=h, intermediate_size=two_i // 2, num_experts=e, top_k=k)
    moe = MoEA8(cfg)
    moe.block = block
    with torch.no_grad():
        moe.w13.copy_(torch.from_numpy(ex.w13))
        moe.w2.copy_(torch.from_numpy(ex.w2))
        moe.gate = _FixedLogits(logits)  # the router logits the op is fed, whatever x
        return moe(x[None])[0][0].numpy()


def _FixedLogits(logits):  # noqa: N802 (a module class built lazily: torch is imported only by the oracle)
    import torch

    class FixedLogits(torch.nn.Module):
        def forward(self, _x):
            return logits

    return FixedLogits()


# ---- the linear ops (Linear, LinearBF16, LinearQ): y [..., N] = x [..., K] Wᵀ

LINEAR_OP_OF = {"fp32": "Linear", "bf16": "LinearBF16", "int8": "LinearQ", "int4": "LinearQ"}


@dataclass
class Linear:
    """One linear's inputs in `dtype` (the float32 weight as the op's initializers decode, beside them)."""

    dtype: str
    x: np.ndarray  # [..., K]
    w: np.ndarray  # [N, K] float32
    initializers: list
    attributes: dict
    block: int | None = None  # int8 / int4: the block the activations are rounded in


def make_linear(x_shape: tuple[int, ...], n: int, dtype: str, block: int = 32, seed: int = 0) -> Linear:
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k = x_shape[-1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    if dtype == "fp32":
        return Linear(dtype, x, w, [numpy_helper.from_array(w, "w")], {})
    if dtype == "bf16":
        b = w.astype(ml_dtypes.bfloat16)
        init = helper.make_tensor("w", TensorProto.BFLOAT16, b.shape, b.view(np.uint16).tobytes(), raw=True)
        return Linear(dtype, x, b.astype(np.float32), [init], {})
    scheme = QuantScheme(8 if dtype == "int8" else 4, block)
    codes, scales = scheme.quantize(w)
    inits = [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(scales, "scales")]
    return Linear(dtype, x, scheme.dequantize(codes, scales), inits, {"bits": scheme.bits, "block_size": block},
                  block)


def linear_model(lin: Linear, node_name: str = "linear0", x_shape=None):
    """A one-node model: y = mixtral.cpu::<linear op>(x, weights...); `x_shape` the declared one (symbolic rows)."""
    from onnx import TensorProto, helper

    k = lin.x.shape[-1]
    dims = x_shape if x_shape is not None else [f"d{i}" for i in range(lin.x.ndim - 1)] + [k]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(LINEAR_OP_OF[lin.dtype], ["x", *(i.name for i in lin.initializers)], ["y"],
                            domain=cpu_kernels.DOMAIN, name=node_name, **lin.attributes)
    graph = helper.make_graph([node], "linear", [x], [y], initializer=lin.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(cpu_kernels.DOMAIN, 1)])


def run_linear(lin: Linear, library: Path, threads: int = 2) -> np.ndarray:
    return session(linear_model(lin), library, threads).run(None, {"x": lin.x})[0]


def linear_oracle(lin: Linear) -> np.ndarray:
    """x Wᵀ in float64 over the weight as stored; int8 / int4: x first rounded to int8 per block
    (mixtral_ref.quantized.quantize_activations, the int8-activation reference parity uses)."""
    import torch

    from mixtral_trt.mixtral_ref.quantized import quantize_activations

    x = torch.from_numpy(lin.x)
    if lin.block:
        x = quantize_activations(x, lin.block)
    return (x.double() @ torch.from_numpy(lin.w).double().T).float().numpy()


def assert_close_to_max(got: np.ndarray, want: np.ndarray, label: str, tol: float = 1e-5) -> None:
    """Every element of `got` within `tol` of max(1, max |want|) of `want`, finite, the same shape; failures print
    `label` and the figures."""
    scale = max(1.0, float(np.abs(want).max()))
    err = np.abs(got - want) / scale
    figures = f"{label}: max error {err.max():.2e} (x max|ref| {scale:.2f})"
    assert got.shape == want.shape and np.isfinite(got).all(), figures
    assert err.max() <= tol, figures
