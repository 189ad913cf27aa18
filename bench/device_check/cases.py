"""Inputs and references of the kernel checks, on any device (the plugins' own references, plugins/*/reference.py,
loop over rows on the CPU, which is hours at Mixtral's sizes; these compute the same math per expert, vectorized,
and tests/bench/test_device_check.py holds them equal to the plugins' own at small sizes).

Shapes: T tokens, E experts, k, H hidden, I intermediate, M_max = T*k + E*(B-1) sorted rows, B = ALIGN_BLOCK.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixtral_trt.common.quant import DEFAULT_BLOCK

# relative error (max |Δ| / max |ref| over the rows a kernel must write) allowed per dtype: the kernel tests'
REL_TOL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 2e-2}
QUANTS = {None: 0, "int8": 8, "int4": 4}  # expert weights: float, weight-only int8 / int4 codes
FILL_INT = -7  # integer outputs are pre-filled with this (float outputs with NaN): unwritten entries show


@dataclass(frozen=True)
class Shape:
    name: str
    experts: int
    top_k: int
    hidden: int
    inter: int


SHAPES = {
    "mixtral-8x7b": Shape("mixtral-8x7b", 8, 2, 4096, 14336),
    "mixtral-8x22b": Shape("mixtral-8x22b", 8, 2, 6144, 16384),
    "tiny": Shape("tiny", 8, 2, 64, 96),  # the CPU stand-in (Triton interpreter)
}


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def group_for(quant: str | None) -> int:
    return DEFAULT_BLOCK[quant] if quant else 0


def router_logits(t: int, e: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    return 2 * torch.randn(t, e, generator=g, device=device)  # [T, E] float32


def float_experts(shape: Shape, dtype: str, device: str, seed: int = 1):
    """(w13 [E, 2I, H], w2 [E, H, I]) with N(0, 0.02) entries, in `dtype`."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    e, h, i = shape.experts, shape.hidden, shape.inter
    w13 = torch.randn(e, 2 * i, h, generator=g, device=device).mul_(0.02).to(torch_dtype(dtype))
    w2 = torch.randn(e, h, i, generator=g, device=device).mul_(0.02).to(torch_dtype(dtype))
    return w13, w2


def random_codes(e: int, n: int, k: int, bits: int, group: int, dtype: str, device: str, seed: int = 2):
    """Random codes uint8 [E, N, K*bits/8] and scales [E, N, K/group] (weights of about N(0, 0.02))."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    codes = torch.randint(0, 256, (e, n, k * bits // 8), generator=g, device=device, dtype=torch.int32)
    scales = (0.5 + torch.rand(e, n, k // group, generator=g, device=device)) * (0.04 / (1 << (bits - 1)))
    return codes.to(torch.uint8), scales.to(torch_dtype(dtype))


def random_f8(e: int, n: int, k: int, dtype: str, device: str, seed: int = 2):
    """Random FP8 e4m3fn bytes uint8 [E, N, K] (every byte but the NaNs 0x7f / 0xff: subnormals, signed zeros and
    448 included) and scales per row [E, N] (weights of about 0.02 at most)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    codes = torch.randint(0, 254, (e, n, k), generator=g, device=device, dtype=torch.int32)
    codes = codes + (codes >= 0x7F).to(torch.int32)  # skip 0x7f; 0xff is above the range
    scales = (0.5 + torch.rand(e, n, generator=g, device=device)) * (0.02 / 448)
    return codes.to(torch.uint8), scales.to(torch_dtype(dtype))


def dequantize_f8(codes, scales, dtype: str):
    """e4m3fn bytes [E, N, K] through torch.float8_e4m3fn, times the row's scale [E, N], rounded to `dtype`."""
    import torch

    return (codes.view(torch.float8_e4m3fn).float() * scales.float()[..., None]).to(torch_dtype(dtype))


def _unpack(codes, bits: int):
    import torch

    return torch.stack((codes & 0x0F, codes >> 4), dim=-1).reshape(*codes.shape[:-1], -1) if bits == 4 else codes


def dequantize(codes, scales, bits: int, dtype: str, zeros=None, order=None):
    """common/quant.py's dequantization on the codes' device, rounded to `dtype` (the GEMM references' weights);
    `zeros` uint8 [E, N, >= ceil(G*bits/8)]: stored zero points instead of 2^(bits-1); `order` int [E, K]: column j
    of expert e is input order[e, j] (act-order), put back in input order."""
    import torch

    q = _unpack(codes, bits).float()  # [E, N, K]
    groups = scales.shape[-1]
    zero = float(1 << (bits - 1)) if zeros is None else _unpack(zeros, bits)[..., :groups, None].float()
    w = ((q.reshape(*q.shape[:-1], groups, -1) - zero) * scales.float()[..., None]).reshape(q.shape)
    if order is not None:
        w = torch.zeros_like(w).scatter_(2, order.long()[:, None, :].expand_as(w), w)
    return w.to(torch_dtype(dtype))


def router_reference(logits, top_k: int):
    from mixtral_trt.plugins.moe_router.reference import moe_router_reference

    return moe_router_reference(logits, top_k)


def align_reference(experts, num_experts: int, block: int):
    from mixtral_trt.plugins.moe_align.reference import moe_align_reference

    return tuple(r.to(experts.device) for r in moe_align_reference(experts.cpu(), num_experts, block))


def real_rows(sorted_pairs, num_padded, pairs: int):
    """Indices of the sorted rows that hold a (token, slot) pair: the rows the GEMM kernels must write."""
    import torch

    rows = torch.arange(sorted_pairs.numel(), device=sorted_pairs.device)
    return rows[(sorted_pairs < pairs) & (rows < num_padded[0])]


def _by_expert(rows, sorted_pairs, block_experts, block: int):
    experts = block_experts[rows // block]
    for e in experts.unique().tolist():
        yield e, rows[experts == e]


def swiglu_reference(x, sorted_pairs, block_experts, num_padded, w13, top_k: int, block: int):
    """inter [M_max, I] (x's dtype, padding rows 0): moe_gemm_swiglu_reference's math per expert."""
    import torch
    import torch.nn.functional as F

    inter = w13.shape[1] // 2
    out = torch.zeros(sorted_pairs.numel(), inter, dtype=x.dtype, device=x.device)
    rows = real_rows(sorted_pairs, num_padded, x.shape[0] * top_k)
    for e, r in _by_expert(rows, sorted_pairs, block_experts, block):
        tokens = sorted_pairs[r].long() // top_k
        gate_up = x[tokens].float() @ w13[e].float().T  # [n, 2I]
        gate, up = gate_up.to(x.dtype).float().chunk(2, dim=-1)
        out[r] = (F.silu(gate) * up).to(x.dtype)
    return out


def down_reference(inter, sorted_pairs, block_experts, num_padded, weights, w2, block: int):
    """y_pairs [T*k, H] float32: moe_gemm_down_reference's math per expert."""
    import torch

    pairs = weights.numel()
    out = torch.zeros(pairs, w2.shape[1], dtype=torch.float32, device=inter.device)
    flat_w = weights.reshape(-1).float()
    rows = real_rows(sorted_pairs, num_padded, pairs)
    for e, r in _by_expert(rows, sorted_pairs, block_experts, block):
        p = sorted_pairs[r].long()
        out[p] = (inter[r].float() @ w2[e].float().T).to(inter.dtype).float() * flat_w[p, None]
    return out


def rel_error(got, ref) -> float:
    """max |got - ref| / max |ref| (inf when got holds a NaN: an unwritten output)."""
    import torch

    got, ref = got.float(), ref.float()
    if not torch.isfinite(got).all():
        return float("inf")
    scale = ref.abs().max().item() or 1.0
    return (got - ref).abs().max().item() / scale
