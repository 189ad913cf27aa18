"""Streamed weights: every initializer is written to the ONNX external data straight from the checkpoint.

A parameter of the reference model is the concatenation of stored tensors (one tensor, or the per-expert
w1/w3/w2 of a layer in keymaps order), cast to the export dtype. `StreamedTensor.tofile` copies those byte
ranges with positioned reads in chunks of CHUNK_BYTES, converting dtype per chunk, so peak memory does not
grow with the checkpoint. Plain reads (not mmap) keep the checkpoint's pages out of the process's RSS.
Entries that need a whole-tensor transform (the RoPE row permutation of mistral consolidated wq / wk)
are materialised one at a time; they are attention matrices, small next to the experts. A quantized linear of a
GPTQ / AWQ / compressed-tensors checkpoint is a `QuantizedSpan`: its stored tensors read and dequantized as its
format does (float32), one linear at a time, so peak memory stays one expert's float weight. Its stored tensors are
read through `_read` (one positioned read of one whole stored tensor).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch
from onnx_ir.tensor_adapters import TorchTensor

from mixtral_trt.common.dtypes import torch_dtype
from mixtral_trt.common.errors import CheckpointError
from mixtral_trt.mixtral_ref import keymaps
from mixtral_trt.mixtral_ref.quant_checkpoint import QuantizedLinears
from mixtral_trt.mixtral_ref.quant_linear import QuantLinear

CHUNK_BYTES = 64 << 20
IR_DTYPES = {torch.float32: ir.DataType.FLOAT, torch.float16: ir.DataType.FLOAT16,
             torch.bfloat16: ir.DataType.BFLOAT16}


@dataclass(frozen=True)
class Span:
    """One stored tensor: a byte range of a safetensors file."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute file offset
    end: int


def read_header(path: Path) -> dict[str, Span]:
    """Parse a safetensors header: stored name -> absolute byte span."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: truncated safetensors header")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    start, size = 8 + n, path.stat().st_size
    spans = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        if start + end > size:
            raise CheckpointError(f"{path}: tensor {key} extends past the end of the file (truncated?)")
        spans[key] = Span(path, torch_dtype(meta["dtype"]), tuple(meta["shape"]), start + begin, start + end)
    return spans


@dataclass(frozen=True)
class QuantizedSpan:
    """One quantized linear of the checkpoint (the stored float weight `key` it replaces)."""

    key: str
    quantized: QuantizedLinears
    stored: dict[str, Span]  # its stored tensors (qweight, scales, ...)
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def linear(self, g_idx=None) -> QuantLinear:
        """The unpacked codes, scales, zero points and groups: each stored tensor read once (`g_idx`: the
        act-order group indices when already read, quant_linear.read_linear)."""
        return self.quantized.read(self.key, lambda name: _read(self.stored[name]), g_idx)

    def read(self) -> torch.Tensor:
        """float32 [N, K]: the format's dequantization."""
        return torch.from_numpy(self.linear().dequantize())


def _read(span: Span | QuantizedSpan) -> torch.Tensor:
    if isinstance(span, QuantizedSpan):
        return span.read()
    with open(span.file, "rb", buffering=0) as f:
        f.seek(span.begin)
        data = bytearray(span.end - span.begin)
        f.readinto(data)
    return torch.frombuffer(data, dtype=span.dtype).reshape(span.shape) if data else torch.empty(span.shape,
                                                                                                 dtype=span.dtype)


class StreamedTensor(ir.LazyTensor):
    """A reference parameter assembled from checkpoint spans; `tofile` streams, `numpy()` materialises."""

    def __init__(self, entry: keymaps.Entry, spans: list[Span], dtype: torch.dtype, name: str) -> None:
        self.entry, self.spans, self.torch_dtype = entry, spans, dtype
        super().__init__(self._materialize, dtype=IR_DTYPES[dtype], shape=ir.Shape(entry.shape), name=name)

    def _materialize(self) -> ir.TensorProtocol:
        tensor = self.entry.combine([_read(s) for s in self.spans]).to(self.torch_dtype).contiguous()
        return TorchTensor(tensor, name=self.name)

    @property
    def streamable(self) -> bool:
        """Copy / stacked-expert entries are byte concatenations of their spans."""
        return self.entry.kind in ("copy", "w13", "w2")

    def tofile(self, file) -> None:
        if not self.streamable:
            file.write(self._materialize().tobytes())
            return
        for span in self.spans:
            if isinstance(span, QuantizedSpan):
                file.write(_bytes(span.read().to(self.torch_dtype)))
                continue
            item = torch.empty(0, dtype=span.dtype).element_size()
            step = max(CHUNK_BYTES // item * item, item)
            with open(span.file, "rb", buffering=0) as f:
                f.seek(span.begin)
                remaining = span.end - span.begin
                while remaining:
                    data = bytearray(min(step, remaining))
                    f.readinto(data)
                    remaining -= len(data)
                    chunk = torch.frombuffer(data, dtype=span.dtype).to(self.torch_dtype)
                    file.write(_bytes(chunk))


def _bytes(t: torch.Tensor) -> memoryview:
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(np.ascontiguousarray(t.numpy())).cast("B")


def streamed_weights(entries: list[keymaps.Entry], where: dict[str, Path], dtype: torch.dtype,
                     prefix: str = "", quantized: QuantizedLinears | None = None) -> dict[str, StreamedTensor]:
    """Reference parameter name -> StreamedTensor, for a checkpoint validated by `plan_checkpoint`
    (`quantized`: its quantized linears, from `plan_quantized_checkpoint`)."""
    headers: dict[Path, dict[str, Span]] = {}

    def span(key: str) -> Span:
        file = where[key]
        if file not in headers:
            headers[file] = read_header(file)
        return headers[file][key]

    weights = {}
    for entry in entries:
        spans = []
        for part in entry.parts:
            if quantized is not None and part.key in quantized.linears:
                stored = {name: span(name) for name in quantized.stored_of(part.key)}
                spans.append(QuantizedSpan(part.key, quantized, stored, part.shape))
            else:
                spans.append(span(part.key))
        weights[entry.name] = StreamedTensor(entry, spans, dtype, prefix + entry.name)
    return weights
