"""The custom ops: schemas, function bodies (run by ONNX Runtime and onnx.reference), the ort lowering's
com.microsoft::MoE, and the torch eager ops — each against the dense oracles in mixtral_ref.moe."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from mixtral_trt.exporter.lowering import lower
from mixtral_trt.exporter.ops import MOE_EXPERTS, MOE_ROUTER
from mixtral_trt.exporter.ops.layer_model import moe_layer_model
from mixtral_trt.mixtral_ref.moe import experts_reference, router_reference
from support import bf16_eval

TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Relative tolerance (max abs error / max |reference|) of the expert output, per activation dtype.
REL_TOL = {"fp32": 1e-5, "fp16": 5e-3, "bf16": 3e-2}


def moe_model(dtype: str, top_k: int) -> onnx.ModelProto:
    return moe_layer_model(dtype, top_k)


def case(t: int, e: int, k: int, h: int = 12, i: int = 20, seed: int = 0, one_expert: bool = False):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(t, e, generator=g)
    if one_expert:  # every token prefers expert e-1 by far
        logits[:, -1] += 20
    x = torch.randn(t, h, generator=g)
    w13 = 0.3 * torch.randn(e, 2 * i, h, generator=g)
    w2 = 0.3 * torch.randn(e, h, i, generator=g)
    return logits, x, w13, w2


def oracle(logits, x, w13, w2, k):
    weights, experts = router_reference(logits, k)
    return experts_reference(x, experts, weights, w13, w2)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float32) - ref).max() / np.abs(ref).max())


CASES = [  # (T, E, k, one_expert)
    (1, 8, 2, False),
    (9, 6, 3, False),
    (16, 4, 1, False),
    (5, 4, 4, False),
    (7, 8, 2, True),
]


def test_schemas_match_spec():
    for spec in (MOE_ROUTER, MOE_EXPERTS):
        schema = onnx.defs.get_schema(spec.name, spec.version, spec.domain)
        assert [p.name for p in schema.inputs] == [t.name for t in spec.inputs]
        assert [p.name for p in schema.outputs] == [t.name for t in spec.outputs]
        assert sorted(schema.attributes) == sorted(a.name for a in spec.attributes)
    onnx.checker.check_model(moe_model("fp32", 2), full_check=True)


@pytest.mark.parametrize(("t", "e", "k", "one_expert"), CASES)
@pytest.mark.parametrize("target", ["canonical", "ort", "portable"])
def test_moe_graph_in_onnxruntime(t, e, k, one_expert, target):
    import onnxruntime as ort

    logits, x, w13, w2 = case(t, e, k, one_expert=one_expert)
    ref = oracle(logits, x, w13, w2, k).numpy()
    model = moe_model("fp32", k)
    if target != "canonical":
        model = ir.to_proto(lower(ir.from_proto(model), target))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"router_logits": logits.numpy(), "x": x.numpy(), "w13": w13.numpy(), "w2": w2.numpy()})
    err = rel_err(y, ref)
    assert err < REL_TOL["fp32"], f"{target} T={t} E={e} k={k}: relative error {err:.2e}"


@pytest.mark.parametrize("target", ["canonical", "ort"])
def test_moe_graph_fp16_in_onnxruntime(target):
    import onnxruntime as ort

    logits, x, w13, w2 = case(9, 8, 2)
    ref = oracle(logits, x, w13, w2, 2).numpy()  # float32 truth
    model = moe_model("fp16", 2)
    if target != "canonical":
        model = ir.to_proto(lower(ir.from_proto(model), target))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"router_logits": logits, "x": x, "w13": w13, "w2": w2}
    (y,) = sess.run(None, {k: v.half().numpy() for k, v in feeds.items()})
    err = rel_err(y, ref)
    assert err < REL_TOL["fp16"], f"{target} fp16: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_function_bodies_in_onnx_reference(dtype):
    """onnx.reference runs bf16, which ONNX Runtime's CPU kernels do not (bf16: each op in float32, rounded once,
    support/bf16_eval.py)."""
    import ml_dtypes
    from onnx.reference import ReferenceEvaluator

    logits, x, w13, w2 = case(6, 6, 2)
    ref = oracle(logits, x, w13, w2, 2).numpy()
    np_dtype = np.float16 if dtype == "fp16" else ml_dtypes.bfloat16
    feeds = {"router_logits": logits, "x": x, "w13": w13, "w2": w2}
    evaluate = bf16_eval.evaluator if dtype == "bf16" else ReferenceEvaluator
    (y,) = evaluate(moe_model(dtype, 2)).run(None, {k: v.numpy().astype(np_dtype) for k, v in feeds.items()})
    err = rel_err(np.asarray(y, np.float32), ref)
    assert err < REL_TOL[dtype], f"function bodies {dtype}: relative error {err:.2e}"


@pytest.mark.parametrize(("t", "e", "k", "one_expert"), CASES)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_torch_ops_match_oracle(t, e, k, one_expert, dtype):
    logits, x, w13, w2 = case(t, e, k, one_expert=one_expert)
    weights, experts = torch.ops.mixtral.moe_router(logits.to(TORCH[dtype]), k)
    ref_w, ref_e = router_reference(logits.to(TORCH[dtype]), k)
    assert weights.dtype == torch.float32 and experts.dtype == torch.int32
    assert torch.equal(experts, ref_e)
    assert torch.allclose(weights, ref_w, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(t), atol=1e-6)
    y = torch.ops.mixtral.moe_experts(x.to(TORCH[dtype]), experts, weights, w13.to(TORCH[dtype]), w2.to(TORCH[dtype]))
    ref = oracle(logits, x, w13, w2, k).numpy()
    err = rel_err(y.float().numpy(), ref)
    assert err < REL_TOL[dtype], f"torch op {dtype} T={t} E={e} k={k}: relative error {err:.2e}"


def test_ort_lowering_interleaves_gate_and_up():
    from mixtral_trt.exporter.lowering.ort import interleave_gate_up

    e, i, h = 2, 3, 4
    w13 = np.arange(e * 2 * i * h, dtype=np.float32).reshape(e, 2 * i, h)
    out = interleave_gate_up(w13)
    for j in range(i):
        np.testing.assert_array_equal(out[:, 2 * j], w13[:, j])  # gate row j
        np.testing.assert_array_equal(out[:, 2 * j + 1], w13[:, i + j])  # up row j


def test_ort_moe_does_not_clamp_large_activations():
    """swiglu_limit = +inf on the ort lowering's MoE: no clamp of the gate / up activations, which real Mixtral
    layers push past GPT-OSS's 7.0 (one CUDA build's default) while these tiny weights normally stay below."""
    import onnxruntime as ort

    logits, x, w13, w2 = case(9, 4, 2, seed=3)
    w13 = 8 * w13  # gate and up pre-activations up to ~20
    gate_up = torch.einsum("th,eoh->eto", x, w13)
    assert gate_up.abs().max() > 2 * 7.0, "the activations must pass the GPT-OSS clamp for this test to mean anything"
    model = lower(ir.from_proto(moe_model("fp32", 2)), "ort")
    moe = next(n for n in model.graph if n.op_type == "MoE")
    assert moe.attributes["swiglu_limit"].as_float() == float("inf")
    sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"router_logits": logits.numpy(), "x": x.numpy(), "w13": w13.numpy(), "w2": w2.numpy()})
    err = rel_err(y, oracle(logits, x, w13, w2, 2).numpy())
    assert err < REL_TOL["fp32"], f"ort MoE with activations up to {gate_up.abs().max():.1f}: relative error {err:.2e}"


# ---- float experts split for the CPU kernel's threads (exporter/lowering/ort_split.py) -----------------
@pytest.mark.parametrize(("t", "e", "k", "one_expert"), CASES)
@pytest.mark.parametrize("parts", [1, 2, 4, 3])  # 3 does not divide I = 20: no split
@pytest.mark.parametrize("threads", [1, 2])
def test_ort_split_experts_equal_the_oracle(t, e, k, one_expert, parts, threads):
    import onnxruntime as ort

    logits, x, w13, w2 = case(t, e, k, one_expert=one_expert)
    ref = oracle(logits, x, w13, w2, k).numpy()
    model = ir.from_proto(moe_layer_model("fp32", k, w13.numpy(), w2.numpy()))
    proto = ir.to_proto(lower(model, "ort", expert_parts=parts))
    moe = next(n for n in proto.graph.node if n.op_type == "MoE")
    expected_parts = parts if 20 % parts == 0 else 1
    assert next(a.i for a in moe.attribute if a.name == "k") == k * expected_parts
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"router_logits": logits.numpy(), "x": x.numpy()})
    err = rel_err(y, ref)
    assert err < REL_TOL["fp32"], f"parts={parts} T={t} E={e} k={k}: relative error {err:.2e}"
