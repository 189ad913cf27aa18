"""The reference model of a quantized engine: mixtral_ref with every expert weight replaced by its
dequantized codes (scales rounded to the activation dtype, as stored), so an engine's parity measures its
kernels, not the quantization; the quantization error itself is reported against the original model."""

from __future__ import annotations

import torch

from mixtral_trt.common.dtypes import torch_dtype
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref.model import Mixtral


@torch.no_grad()
def fake_quantize_(model: Mixtral, scheme: QuantScheme, dtype: str) -> Mixtral:
    """In place: w13 and w2 of every layer become dequantize(encode(w)) as the export stores them."""
    for layer in model.layers:
        for param in (layer.moe.w13, layer.moe.w2):
            w = param.float().numpy()
            scales = torch.from_numpy(scheme.scales_for(w)).to(torch_dtype(dtype)).float().numpy()
            param.copy_(torch.from_numpy(scheme.dequantize(scheme.encode(w, scales), scales)).to(param.dtype))
    return model


def scheme_of(contract) -> QuantScheme | None:
    spec = contract.extra.get("quantization")
    return QuantScheme(spec["bits"], spec["block_size"]) if spec else None
