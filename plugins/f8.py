"""What the FP8 e4m3 GEMMs' hosts share (MoEGemmSwiGLUF8 / MoEGemmDownF8): the BITS their kernels are launched
with, and the weights' checks (e4m3fn bytes, one float32 scale per output row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# plugins/dequant.py F8_E4M3: the quantized kernels' BITS for e4m3fn bytes (one byte per weight)
F8_BITS = -8


def check_f8(codes: torch.Tensor, scales: torch.Tensor, rows: int, k: int, what: str) -> torch.Tensor:
    """e4m3fn bytes uint8 [E, N, K] (float8_e4m3fn viewed as bytes too) and scales per output row [E, N] / [E, N, 1]
    or per tensor [E] / [E, 1] / [E, 1, 1] -> the [E, N] scales the kernels read (a per-tensor scale broadcast to
    every row: exact); any other layout refused."""
    import torch

    lead = (codes.shape[0], rows)
    if codes.dtype not in (torch.uint8, torch.float8_e4m3fn) or tuple(codes.shape) != (*lead, k):
        raise ValueError(f"{what}: codes {codes.dtype} {tuple(codes.shape)}, expected torch.uint8 {(*lead, k)}")
    flat = scales.reshape(scales.shape[0], -1) if scales.dim() else scales.reshape(1, 1)
    if flat.shape[0] != lead[0] or flat.shape[1] not in (1, rows):
        raise ValueError(f"{what}: scales {tuple(scales.shape)}, expected {lead} (per row) or ({lead[0]},) "
                         "(per tensor)")
    return flat.expand(*lead).contiguous()
