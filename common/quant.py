"""Weight-only symmetric integer quantization of expert weights, in ONNX Runtime QMoE's storage format.

A weight [E, N, K] (N output rows, K input features) is split into groups of `block_size` along K (one
group per row when block_size is 0: per-channel). Each group gets scale = max |w| / (2^(bits-1) - 1);
q = round(w / scale) in [-(2^(bits-1) - 1), 2^(bits-1) - 1], stored as the unsigned code q + 2^(bits-1)
(the implicit zero point). 4-bit codes are packed two per byte along K, the even element in the low
nibble. Dequantization: w ≈ (code - 2^(bits-1)) * scale.

    codes  uint8 [E, N, K * bits / 8]
    scales       [E, N] (per-channel) or [E, N, K / block_size] (block-wise), in the activation dtype

Optional zero points (block-wise only; a GPTQ / AWQ / compressed-tensors asymmetric checkpoint's own, kept as
stored): one unsigned zero point per group, packed like the codes along the groups (two 4-bit zero points per
byte, the even group in the low nibble; ONNX Runtime's packed QMoE / MatMulNBits zero points); then
w = (code - zero[group]) * scale[group].

    zeros  uint8 [E, N, ceil(G * bits / 8)]     G = K / block_size
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import MixtralTrtError

SCHEMES = {"int8": 8, "int4": 4}
# 32-wide blocks for both: int4 per-channel loses too much, and ONNX Runtime's fast CPU kernels (QMoE's and
# MatMulNBits' QNBit GEMM) take block-wise weights only; per-channel int8 is dequantized to float every call.
DEFAULT_BLOCK = {"int8": 32, "int4": 32}


@dataclass(frozen=True)
class QuantScheme:
    bits: int  # 8 or 4
    block_size: int  # 0: per output channel; else a power of two >= 16 dividing K

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise MixtralTrtError(f"quantization: {self.bits} bits is not supported (int8 or int4)")
        if self.block_size and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise MixtralTrtError(f"--quant-block {self.block_size}: must be 0 (per channel) or a power of 2 >= 16")

    @classmethod
    def parse(cls, name: str, block_size: int | None = None) -> QuantScheme:
        if name not in SCHEMES:
            raise MixtralTrtError(f"--quantize {name!r}: choose one of {', '.join(SCHEMES)}")
        return cls(SCHEMES[name], DEFAULT_BLOCK[name] if block_size is None else block_size)

    @property
    def name(self) -> str:
        return f"int{self.bits}" + (f"-block{self.block_size}" if self.block_size else "-per-channel")

    @property
    def zero_point(self) -> int:
        return 1 << (self.bits - 1)

    def check_dims(self, k: int, what: str) -> None:
        if self.block_size and k % self.block_size:
            raise MixtralTrtError(f"--quant-block {self.block_size} does not divide {what} = {k}")
        if self.bits == 4 and k % 2:
            raise MixtralTrtError(f"int4 packs two values per byte: {what} = {k} must be even")

    def _grouped(self, w: np.ndarray) -> np.ndarray:
        """[..., N, K] -> [..., N, G, K/G] (G = 1 per channel)."""
        k = w.shape[-1]
        groups = k // self.block_size if self.block_size else 1
        return np.asarray(w, np.float32).reshape(*w.shape[:-1], groups, k // groups)

    def scales_for(self, w: np.ndarray) -> np.ndarray:
        """float32 [..., N] (per channel) or [..., N, G]: max |w| of each group / (2^(bits-1) - 1)."""
        scales = np.abs(self._grouped(w)).max(-1) / (self.zero_point - 1)
        scales = np.where(scales == 0, 1.0, scales).astype(np.float32)
        return scales if self.block_size else scales[..., 0]

    def encode(self, w: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Codes uint8 [..., N, K*bits/8] of w against the given (stored) scales."""
        grouped = self._grouped(w)
        s = np.asarray(scales, np.float32).reshape(*grouped.shape[:-1], 1)
        qmax = self.zero_point - 1
        codes = np.clip(np.rint(grouped / s), -qmax, qmax) + self.zero_point
        return self.pack(codes.astype(np.uint8).reshape(w.shape))

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Unsigned codes uint8 [..., K] (zero point 2^(bits-1)) -> the stored bytes [..., K*bits/8]. A checkpoint
        quantized symmetrically by its own tool (GPTQ sym, compressed-tensors symmetric) is stored this way as is:
        its codes may use 0 (-2^(bits-1)), which `encode` never writes and `dequantize` reads like any other."""
        codes = np.asarray(codes, np.uint8)
        if self.bits == 4:
            codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
        return np.ascontiguousarray(codes)

    def quantize(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """w [..., N, K] float -> (codes uint8 [..., N, K*bits/8], scales float32 [..., N] or [..., N, G])."""
        scales = self.scales_for(w)
        return self.encode(w, scales), scales

    def pack_zeros(self, zeros: np.ndarray) -> np.ndarray:
        """Unsigned zero points [..., N, G] -> the stored bytes [..., N, ceil(G*bits/8)] (4-bit: G padded to even)."""
        zeros = np.asarray(zeros, np.uint8)
        if self.bits == 4 and zeros.shape[-1] % 2:
            zeros = np.concatenate([zeros, np.zeros((*zeros.shape[:-1], 1), np.uint8)], axis=-1)
        return self.pack(zeros)

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        if self.bits == 4:
            return np.stack((packed & 0x0F, packed >> 4), axis=-1).reshape(*packed.shape[:-1], -1)
        return packed

    def dequantize(self, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None = None) -> np.ndarray:
        """Inverse of `quantize` (float32 [..., N, K]); `zeros`: stored zero points (block-wise) instead of
        2^(bits-1)."""
        q = self._unpack(codes).astype(np.float32)
        scales = np.asarray(scales, np.float32)
        if not self.block_size:
            return (q - self.zero_point) * scales[..., None]
        groups = scales.shape[-1]
        zero = (np.float32(self.zero_point) if zeros is None
                else self._unpack(zeros)[..., :groups, None].astype(np.float32))
        return ((q.reshape(*q.shape[:-1], groups, -1) - zero) * scales[..., None]).reshape(q.shape)
