"""The cpu_kernels library's mixtral.cpu::RaggedAttention on every ISA path this CPU runs, against dense masked
grouped-query attention in float64 (torch: mixtral_ref's rope on the query, every query head over its kv head's
keys expanded, the -3.4e38 bias of mixtral_ref.layers.attention_bias where a slot is not visible, softmax), and its
errors naming the node.

Tolerance: 1e-5 of max |reference| for every element (float32 dots and softmax against float64; the query is
scaled by D^-0.5 before its dots where the reference scales the scores).
B batch, T queries, S key slots, H query heads, G kv heads, D head_dim, C rotary table rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mixtral_trt.plugins import cpu_kernels
from mixtral_trt.runtime.ragged import visibility
from support.cpu_kernels import assert_close_to_max, session

THETA = 10000.0


@dataclass(frozen=True)
class Attn:
    q: np.ndarray  # [B, T, H * D]
    k: np.ndarray  # [B, G, S, D]
    v: np.ndarray
    visible: np.ndarray  # [B, T, S] bool
    position: np.ndarray  # [B, T] int64
    heads: int
    rows: int = 512  # C

    @property
    def feeds(self) -> dict[str, np.ndarray]:
        return {"query": self.q, "key": self.k, "value": self.v, "attention_visible": self.visible,
                "position_ids": self.position}


def tables(rows: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [C, D / 2]: what the lowering stores (exporter/lowering/gqa.py's rope tables)."""
    import torch

    from mixtral_trt.mixtral_ref.layers import rope_cos_sin

    cos, sin = rope_cos_sin(torch.arange(rows)[None], d, THETA, torch.float32)
    return cos[0, :, : d // 2].contiguous().numpy(), sin[0, :, : d // 2].contiguous().numpy()


def attention_model(a: Attn, node_name: str = "attn0", shapes: dict | None = None, heads: int | None = None,
                    kv_heads: int | None = None, sin_rows: int | None = None, key_type: int | None = None):
    """A one-node model: out = mixtral.cpu::RaggedAttention(query, key, value, attention_visible, position_ids,
    cos, sin); `shapes` overrides declared input shapes, the others break one thing each."""
    from onnx import TensorProto, helper, numpy_helper

    d = a.k.shape[3]
    cos, sin = tables(a.rows, d)
    declared = {"query": ["B", "T", a.q.shape[2]], "key": ["B", a.k.shape[1], "S", d],
                "value": ["B", a.k.shape[1], "S", d], "attention_visible": ["B", "T", "S"],
                "position_ids": ["B", "T"], **(shapes or {})}
    types = {"attention_visible": TensorProto.BOOL, "position_ids": TensorProto.INT64,
             "key": key_type or TensorProto.FLOAT}
    inputs = [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), s) for n, s in declared.items()]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    node = helper.make_node("RaggedAttention", [*declared, "cos", "sin"], ["out"], domain=cpu_kernels.DOMAIN,
                            name=node_name, num_heads=heads or a.heads, kv_num_heads=kv_heads or a.k.shape[1])
    inits = [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin[: sin_rows or a.rows], "sin")]
    graph = helper.make_graph([node], "attention", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(cpu_kernels.DOMAIN, 1)])


def run_attention(a: Attn, library, threads: int = 2) -> np.ndarray:
    return session(attention_model(a), library, threads).run(None, a.feeds)[0]


def oracle(a: Attn) -> np.ndarray:
    """[B, T, H * D] float64: dense attention over every slot with the mask as mixtral_ref's additive bias."""
    import torch

    from mixtral_trt.mixtral_ref.layers import apply_rope, rope_cos_sin

    b, t, _ = a.q.shape
    g, d = a.k.shape[1], a.k.shape[3]
    q = torch.from_numpy(a.q).double().view(b, t, a.heads, d).transpose(1, 2)  # [B, H, T, D]
    cos, sin = rope_cos_sin(torch.from_numpy(a.position), d, THETA, torch.float64)  # [B, T, D]
    q = apply_rope(q, cos, sin)
    k = torch.from_numpy(a.k).double().repeat_interleave(a.heads // g, dim=1)  # [B, H, S, D]
    v = torch.from_numpy(a.v).double().repeat_interleave(a.heads // g, dim=1)
    bias = torch.zeros(a.visible.shape, dtype=torch.float64).masked_fill(~torch.from_numpy(a.visible),
                                                                         torch.finfo(torch.float32).min)
    scores = q @ k.transpose(2, 3) * d**-0.5 + bias[:, None]  # [B, H, T, S]
    out = torch.softmax(scores, dim=-1) @ v  # [B, H, T, D]
    return out.transpose(1, 2).reshape(b, t, -1).numpy()


def make_attention(b: int, t: int, s: int, heads: int, kv_heads: int, d: int, visible: np.ndarray | None = None,
                   position: np.ndarray | None = None, seed: int = 0) -> Attn:
    """Random q, k, v; by default each row's T queries in its last T slots, causal."""
    rng = np.random.default_rng(seed)
    if visible is None:
        slot, query = np.arange(s), np.arange(s - t, s)
        visible = np.broadcast_to(slot[None, :] <= query[:, None], (b, t, s)).copy()
    if position is None:
        position = np.broadcast_to(np.arange(s - t, s), (b, t)).astype(np.int64).copy()
    q = rng.standard_normal((b, t, heads * d), np.float32)
    k, v = (rng.standard_normal((b, kv_heads, s, d), np.float32) for _ in range(2))
    return Attn(q, k, v, visible, position, heads)


def packed_rows(past: list[int], new: list[int], window: int | None, heads: int, kv_heads: int, d: int,
                seed: int = 0) -> Attn:
    """Rows packed as batch 1, as runtime/ragged.py's PackedCache feeds them: pasts, then new tokens."""
    owner = np.concatenate([np.repeat(np.arange(len(past)), past), np.repeat(np.arange(len(new)), new)])
    pos = np.concatenate([*(np.arange(p) for p in past),
                          *(np.arange(p, p + n) for p, n in zip(past, new, strict=True))])
    n = sum(new)
    vis = visibility(owner, pos, owner[-n:], pos[-n:], window)[None]
    return make_attention(1, n, owner.size, heads, kv_heads, d, vis, pos[-n:][None].astype(np.int64), seed)


CASES = {
    "decode": lambda: make_attention(1, 1, 37, 4, 2, 16),
    "prefill-odd-D": lambda: make_attention(2, 5, 9, 8, 2, 24, seed=1),  # D not a multiple of 16
    "G=H": lambda: make_attention(1, 3, 20, 4, 4, 8, seed=2),
    "tail-D": lambda: make_attention(1, 4, 11, 6, 3, 6, seed=3),  # D below every SIMD width
    "packed-rows": lambda: packed_rows([40, 0, 120, 97], [1, 16, 1, 1], None, 6, 2, 40, seed=4),  # S = 276
    "packed-window": lambda: packed_rows([150, 60, 3], [1, 24, 1], 32, 4, 1, 32, seed=5),  # G = 1
    "batch-rows": lambda: make_attention(3, 7, 300, 8, 4, 64, seed=6),
}


def _check(a: Attn, got: np.ndarray) -> None:
    assert_close_to_max(got, oracle(a), f"q {a.q.shape} k {a.k.shape}")


@pytest.mark.parametrize("isa", ["amx", "avx512bf16", "avx512", "avx2", "portable"])
@pytest.mark.parametrize("case", CASES)
def test_attention_matches_reference(library, use_isa, isa, case):
    use_isa(isa)
    assert cpu_kernels.isa(library) == isa
    a = CASES[case]()
    _check(a, run_attention(a, library))


@pytest.mark.parametrize("isa", ["avx512", "portable"])
def test_query_with_no_visible_slot_is_the_mean_of_the_values(library, use_isa, isa):
    """The canonical graph's finite bias makes such a query's softmax uniform: so does the op (never NaN)."""
    use_isa(isa)
    a = make_attention(1, 3, 12, 4, 2, 16, seed=7)
    a.visible[0, 1] = False
    got = run_attention(a, library)
    _check(a, got)
    mean = a.v[0].mean(axis=1)  # [G, D]: heads 0-1 read kv head 0, heads 2-3 kv head 1
    np.testing.assert_allclose(got[0, 1].reshape(4, 16), np.repeat(mean, 2, axis=0), atol=1e-6)


def test_thread_counts_give_the_same_result(library, isas, monkeypatch):
    for isa in isas:
        monkeypatch.setenv(cpu_kernels.ISA_ENV, isa)
        a = CASES["packed-rows"]()
        one = run_attention(a, library, threads=1)
        for threads in (2, 3, 4):
            np.testing.assert_array_equal(run_attention(a, library, threads=threads), one,
                                          err_msg=f"{isa}, {threads} threads")


ERRORS = {  # what breaks, model options, the message
    "query width": ({"shapes": {"query": ["B", "T", 63]}}, r"attn0.*query \[-1, -1, 63\]: want \[-1, -1, 64\]"),
    "kv heads": ({"shapes": {"key": ["B", 3, "S", 16]}}, r"attn0.*key \[-1, 3, -1, 16\]"),
    "heads": ({"kv_heads": 3}, r"attn0.*kv_num_heads = 3"),
    "tables": ({"sin_rows": 100}, r"attn0.*cos \[512, 8\] and sin \[100, 8\]"),
    "key dtype": ({"key_type": 10}, r"attn0"),  # float16: ONNX Runtime's type check
}


@pytest.mark.parametrize("what", ERRORS)
def test_bad_node_is_a_session_error_naming_it(library, what):
    options, message = ERRORS[what]
    a = make_attention(1, 1, 5, 4, 2, 16)
    with pytest.raises(Exception, match=message):  # noqa: B017 (ONNX Runtime's own exception types)
        session(attention_model(a, **options), library)


def test_bad_call_is_an_error_naming_the_node(library):
    a = make_attention(1, 2, 5, 4, 2, 16)
    sess = session(attention_model(a), library)
    with pytest.raises(Exception, match=r"attn0.*position_ids holds 512"):  # noqa: B017
        sess.run(None, {**a.feeds, "position_ids": np.array([[3, 512]], np.int64)})
    with pytest.raises(Exception, match=r"attn0.*attention_visible \[1, 2, 4\]"):  # noqa: B017
        sess.run(None, {**a.feeds, "attention_visible": a.visible[:, :, :4]})
