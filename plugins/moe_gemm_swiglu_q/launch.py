"""Host side of MoEGemmSwiGLUQ: MoEGemmSwiGLU's launch with codes + scales, the codes' bits and the scale group."""

from __future__ import annotations

import torch

from ..moe_gemm_swiglu.launch import launch
from ..tiles import CPU_TACTIC


def check_codes(codes: torch.Tensor, rows: int, k: int, bits: int, what: str) -> None:
    """The kernels read the codes as bytes [E, N, K*bits/8]: refuse any other layout (e.g. the bytes widened to
    int32 elements, which is what TensorRT's ONNX parser makes of a UINT8 initializer)."""
    expected = (codes.shape[0], rows, k * bits // 8)
    if codes.dtype != torch.uint8 or tuple(codes.shape) != expected:
        raise ValueError(f"{what}: codes {codes.dtype} {tuple(codes.shape)}, expected torch.uint8 {expected}")


def run(x, sorted_pairs, block_experts, num_padded, codes, scales, top_k: int, block_size: int, bits: int,
        quant_block: int, tactic: int = CPU_TACTIC, out: torch.Tensor | None = None) -> torch.Tensor:
    from .kernel import moe_gemm_swiglu_q_kernel

    check_codes(codes, codes.shape[1], x.shape[1], bits, "MoEGemmSwiGLUQ")
    return launch(moe_gemm_swiglu_q_kernel, x, (sorted_pairs, block_experts, num_padded), (codes, scales),
                  codes.shape[1] // 2, top_k, block_size, tactic, out, BITS=bits, GROUP=quant_block or x.shape[1])


def zero_row_bytes(k: int, bits: int, quant_block: int) -> int:
    """Bytes per row of zero points the kernels read (plugins/dequant.py zero_rows): ceil(G*bits/8) padded to whole
    int32 words, G = k / quant_block."""
    return (k // quant_block * bits + 31) // 32 * 4


def check_zeros(zeros: torch.Tensor, lead: tuple[int, int], k: int, bits: int, quant_block: int,
                what: str) -> torch.Tensor:
    """Zero points uint8 [E, N, ceil(G*bits/8)] (common/quant.py) or already padded to whole int32 words -> the
    padded bytes the kernels read; any other layout refused."""
    if quant_block <= 0 or k % quant_block:
        raise ValueError(f"{what}: zero points need block-wise scales; quant_block {quant_block} for {k} inputs")
    stored, padded = -(-k // quant_block * bits // 8), zero_row_bytes(k, bits, quant_block)
    if zeros.dtype != torch.uint8 or tuple(zeros.shape[:2]) != tuple(lead) or zeros.dim() != 3 \
            or zeros.shape[2] not in (stored, padded):
        raise ValueError(f"{what}: zeros {zeros.dtype} {tuple(zeros.shape)}, expected torch.uint8 "
                         f"{(*lead, stored)} (or {padded} bytes per row)")
    if zeros.shape[2] == padded:
        return zeros
    return torch.nn.functional.pad(zeros, (0, padded - stored))
