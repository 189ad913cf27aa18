"""One quantized linear of a GPTQ / AWQ / compressed-tensors checkpoint: its stored tensors, checked, unpacked
into one form (`QuantLinear`), and its dequantization, which is each format's own:

    w[n, k] = (code[n, k] - zero[n, g(k)]) * scale[n, g(k)]     (integer formats, computed in float32)
    w[n, k] = fp8[n, k] * scale[n or 0]                          (FP8 e4m3, computed in float32)

with g(k) = g_idx[k] (act-order) or k // group_size. Codes and zero points are unsigned (what the formats
pack); a symmetric format's zero point is 2^(bits-1). Stored tensors, per linear `X` (N outputs, K inputs,
G groups, p = 32 / bits values per int32, each packed lowest bits first):

  gptq  X.qweight int32 [K/p, N] (packed along K), X.qzeros int32 [G, N/p], X.scales [G, N], X.g_idx int32 [K];
        checkpoint_format "gptq" (v1) stores zero - 1
  awq   X.qweight int32 [K, N/8], X.qzeros int32 [G, N/8], X.scales [G, N]; the 8 nibbles of a word hold
        columns 0 2 4 6 1 3 5 7 of its 8
  c-t   X.weight_packed int32 [N, K/p] (codes offset by 2^(bits-1)), X.weight_scale [N, G],
        X.weight_zero_point int32 [N/p, G] (packed along N; asymmetric only), X.weight_shape [2],
        X.weight_g_idx int32 [K] (actorder "group")
  fp8   X.weight float8_e4m3fn [N, K], X.weight_scale [1] / [] (tensor) or [N, 1] (channel), X.input_scale
        (static activations; not applied: the engine's activations stay float)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mixtral_trt.common.errors import CheckpointError

from .quant_config import CheckpointQuant

SCALE_DTYPES = ("F16", "BF16", "F32")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # column (of 8) stored in nibble i


@dataclass(frozen=True)
class QuantLinear:
    """A weight [N, K] as its checkpoint quantized it (unpacked)."""

    bits: int
    codes: np.ndarray  # uint8 [N, K] unsigned codes; FP8: float32 [N, K] (the e4m3 values, exact)
    scales: np.ndarray  # float32 [N, G] (FP8: [N, 1] or [1, 1])
    zeros: np.ndarray | None  # int32 [N, G] unsigned zero points; None for FP8
    g_idx: np.ndarray | None  # int64 [K]: group of each input channel; None: contiguous groups

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def groups_of_inputs(self) -> np.ndarray:
        """int64 [K]: the scale / zero column of every input channel."""
        if self.g_idx is not None:
            return self.g_idx
        k, g = self.codes.shape[1], self.scales.shape[1]
        return np.arange(k) // (k // g)

    def dequantize(self) -> np.ndarray:
        """float32 [N, K], the format's dequantization."""
        cols = self.groups_of_inputs()
        if self.zeros is None:  # FP8: per tensor or per output channel
            return self.codes * self.scales[:, :1]
        q = self.codes.astype(np.float32) - self.zeros[:, cols].astype(np.float32)
        return q * self.scales[:, cols]


Reader = Callable[[str], torch.Tensor]
Meta = Callable[[str], "tuple[list[int], str] | None"]


def stored_names(q: CheckpointQuant, base: str) -> tuple[str, ...]:
    """Names of the tensors that store the quantized linear `base` (e.g. model.layers.0.self_attn.q_proj)."""
    if q.kind == "fp8":
        return (f"{base}.weight", f"{base}.weight_scale")
    if q.method == "gptq":
        return tuple(f"{base}.{s}" for s in ("qweight", "qzeros", "scales", "g_idx"))
    if q.method == "awq":
        return tuple(f"{base}.{s}" for s in ("qweight", "qzeros", "scales"))
    names = [f"{base}.weight_packed", f"{base}.weight_scale", f"{base}.weight_shape"]
    if not q.symmetric:
        names.append(f"{base}.weight_zero_point")
    if q.act_order:
        names.append(f"{base}.weight_g_idx")
    return tuple(names)


def optional_names(q: CheckpointQuant, base: str) -> tuple[str, ...]:
    """Stored tensors a quantized linear may carry that do not change its weight."""
    return (f"{base}.input_scale",) if q.kind == "fp8" else ()


def is_quantized(q: CheckpointQuant, base: str, meta: Meta) -> bool:
    """Whether the checkpoint stores `base` quantized (from the headers)."""
    if q.kind == "fp8":
        m = meta(f"{base}.weight")
        return m is not None and m[1] == "F8_E4M3"
    return meta(stored_names(q, base)[0]) is not None


def _groups(q: CheckpointQuant, k: int) -> int:
    return 1 if q.group_size <= 0 else -(-k // q.group_size)


def expected_shapes(q: CheckpointQuant, base: str, n: int, k: int, where: str) -> dict[str, tuple[tuple, tuple]]:
    """Stored name -> (shape, allowed dtypes) for the linear `base` [n, k]; CheckpointError if the format
    cannot store those dimensions."""
    if q.kind == "fp8":
        return {f"{base}.weight": ((n, k), ("F8_E4M3",)),
                f"{base}.weight_scale": ((n, 1) if q.group_size == 0 else (1,), ("F32", "BF16", "F16"))}
    p = 32 // q.bits
    g = _groups(q, k)
    if q.group_size > 0 and k % q.group_size and not q.act_order:
        raise CheckpointError(f"{where}: {base} has {k} inputs, not a multiple of group_size {q.group_size}")
    names = dict(zip(("qweight", "qzeros", "scales", "g_idx"), stored_names(q, base), strict=False))
    if q.method == "gptq":
        if k % p or n % p:
            raise CheckpointError(f"{where}: {base} [{n}, {k}] cannot be packed {p} per int32")
        return {names["qweight"]: ((k // p, n), ("I32",)), names["qzeros"]: ((g, n // p), ("I32",)),
                names["scales"]: ((g, n), SCALE_DTYPES), names["g_idx"]: ((k,), ("I32", "I64"))}
    if q.method == "awq":
        if n % 8:
            raise CheckpointError(f"{where}: {base} has {n} outputs, not a multiple of 8 (AWQ packing)")
        return {names["qweight"]: ((k, n // 8), ("I32",)), names["qzeros"]: ((g, n // 8), ("I32",)),
                names["scales"]: ((g, n), SCALE_DTYPES)}
    shapes = {f"{base}.weight_packed": ((n, -(-k * q.bits // 32)), ("I32",)),
              f"{base}.weight_scale": ((n, g), SCALE_DTYPES), f"{base}.weight_shape": ((2,), ("I64", "I32"))}
    if not q.symmetric:
        shapes[f"{base}.weight_zero_point"] = ((-(-n * q.bits // 32), g), ("I32",))
    if q.act_order:
        shapes[f"{base}.weight_g_idx"] = ((k,), ("I32", "I64"))
    return shapes


def _unpack(packed: torch.Tensor, bits: int, axis: int) -> np.ndarray:
    """int32 words -> unsigned values (lowest bits first) along `axis` (0 or 1 of a 2-D tensor): uint8."""
    u = np.ascontiguousarray(packed.numpy()).view(np.uint32)  # the words' bits, no widening (bounded memory)
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    mask = np.uint32((1 << bits) - 1)
    if axis == 0:  # [R/p, C] -> [R/p, p, C] -> [R, C]
        v = (u[:, None, :] >> shifts[None, :, None]) & mask
        return v.reshape(-1, u.shape[1]).astype(np.uint8)
    v = (u[:, :, None] >> shifts[None, None, :]) & mask  # [R, C/p, p]
    return v.reshape(u.shape[0], -1).astype(np.uint8)


def read_linear(q: CheckpointQuant, base: str, get: Reader, n: int, k: int, file: str,
                g_idx: np.ndarray | None = None) -> QuantLinear:
    """The unpacked linear `base` [n, k] (shapes already checked against `expected_shapes`); values checked.
    `g_idx`: an act-order linear's group indices when the caller has read and checked them already
    (`input_order`, then `g_idx_of_order`), so that its stored g_idx is not read a second time."""
    if q.kind == "fp8":
        w = get(f"{base}.weight").float().numpy()
        s = get(f"{base}.weight_scale").float().reshape(-1, 1).numpy()
        return QuantLinear(8, w, s, None, None)
    if q.method == "gptq":
        codes = _unpack(get(f"{base}.qweight"), q.bits, 0).T  # [N, K]
        zeros = _unpack(get(f"{base}.qzeros"), q.bits, 1).astype(np.int32)  # [G, N]
        if q.serialization == "gptq":  # v1 stores zero - 1: a stored all-ones would be 2^bits
            if (zeros == (1 << q.bits) - 1).any():
                raise CheckpointError(f"{file}: {base}.qzeros: zero point {1 << q.bits} overflows {q.bits} bits "
                                      "(checkpoint_format gptq stores zero - 1); convert to gptq_v2")
            zeros = zeros + 1
        scales = get(f"{base}.scales").float().numpy()
        if g_idx is None:
            g_idx = get(f"{base}.g_idx").numpy().astype(np.int64)
        g_idx = _check_g_idx(q, g_idx, scales.shape[0], k, f"{file}: {base}.g_idx")
        return _checked(q, QuantLinear(q.bits, codes, scales.T.copy(), zeros.T.copy(), g_idx), base, file)
    if q.method == "awq":
        inverse = np.argsort(AWQ_ORDER)

        def columns(t: torch.Tensor) -> np.ndarray:
            v = _unpack(t, 4, 1)
            return v.reshape(v.shape[0], -1, 8)[:, :, inverse].reshape(v.shape)

        codes, zeros = columns(get(f"{base}.qweight")).T, columns(get(f"{base}.qzeros")).astype(np.int32)
        scales = get(f"{base}.scales").float().numpy()
        return QuantLinear(4, np.ascontiguousarray(codes), scales.T.copy(), zeros.T.copy(), None)
    shape = get(f"{base}.weight_shape").tolist()
    if shape != [n, k]:
        raise CheckpointError(f"{file}: {base}.weight_shape is {shape}, expected {[n, k]}")
    codes = _unpack(get(f"{base}.weight_packed"), q.bits, 1)[:, :k]
    scales = get(f"{base}.weight_scale").float().numpy()
    g = scales.shape[1]
    if q.symmetric:
        zeros = np.full((n, g), 1 << (q.bits - 1), np.int32)
    else:
        zeros = _unpack(get(f"{base}.weight_zero_point"), q.bits, 0)[:n].astype(np.int32)
    if q.act_order:
        if g_idx is None:
            g_idx = get(f"{base}.weight_g_idx").numpy().astype(np.int64)
        g_idx = _check_g_idx(q, g_idx, g, k, f"{file}: {base}.weight_g_idx")
    else:
        g_idx = None
    return _checked(q, QuantLinear(q.bits, codes, scales, zeros, g_idx), base, file)


def input_order(q: CheckpointQuant, base: str, get: Reader, k: int, file: str) -> np.ndarray | None:
    """int64 [K]: the input channels of linear `base` sorted by group (stable), so that its groups become the
    contiguous blocks k // group_size; None when they already are (no act-order, or a g_idx in order). Reads
    only the stored g_idx (checked as `read_linear` checks it)."""
    if not q.act_order or q.kind == "fp8":
        return None
    name = f"{base}.g_idx" if q.method == "gptq" else f"{base}.weight_g_idx"
    groups = 1 if q.group_size <= 0 else -(-k // q.group_size)
    g_idx = _check_g_idx(q, get(name).numpy().astype(np.int64), groups, k, f"{file}: {name}")
    return None if g_idx is None else np.argsort(g_idx, kind="stable")


def g_idx_of_order(order: np.ndarray | None, k: int, group_size: int) -> np.ndarray:
    """int64 [K]: the group indices `input_order` read, from the order it returned (None: contiguous groups).
    Exact when group_size tiles K: the checked groups then hold group_size inputs each, so the stable sort puts
    input order[j] in group j // group_size."""
    contiguous = np.arange(k) // (group_size if group_size > 0 else k)
    if order is None:
        return contiguous
    g_idx = np.empty(k, np.int64)
    g_idx[order] = contiguous
    return g_idx


def _check_g_idx(q: CheckpointQuant, g_idx: np.ndarray, groups: int, k: int, where: str) -> np.ndarray | None:
    """None when the groups are contiguous (k // group_size), else the checked g_idx."""
    if g_idx.min(initial=0) < 0 or g_idx.max(initial=0) >= groups:
        raise CheckpointError(f"{where}: group indices must lie in [0, {groups}), got "
                              f"[{g_idx.min()}, {g_idx.max()}]")
    contiguous = np.arange(k) // (q.group_size if q.group_size > 0 else k)
    if np.array_equal(g_idx, contiguous):
        return None
    if not q.act_order:
        raise CheckpointError(f"{where}: groups are not contiguous but the config says no act-order (desc_act)")
    if q.group_size > 0 and np.bincount(g_idx, minlength=groups).max() > q.group_size:
        raise CheckpointError(f"{where}: a group holds more than group_size {q.group_size} input channels")
    return g_idx


def _checked(q: CheckpointQuant, lin: QuantLinear, base: str, file: str) -> QuantLinear:
    if q.symmetric and (lin.zeros != 1 << (q.bits - 1)).any():
        raise CheckpointError(f"{file}: {base}: zero points differ from {1 << (q.bits - 1)} but the config says "
                              "symmetric (sym true)")
    if not np.isfinite(lin.scales).all():
        raise CheckpointError(f"{file}: {base}: scales are not all finite")
    return lin
