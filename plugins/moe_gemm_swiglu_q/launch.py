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
