"""torch.onnx (dynamo) translations: the torch custom ops become the canonical ONNX custom-op nodes."""

from __future__ import annotations

import torch
from onnxscript import values

from .spec import DOMAIN, MOE_EXPERTS, MOE_ROUTER, OPSET_VERSION

_mixtral = values.Opset(DOMAIN, OPSET_VERSION)


def _router(router_logits, top_k: int):
    return getattr(_mixtral, MOE_ROUTER.name)(router_logits, top_k=top_k, _outputs=len(MOE_ROUTER.outputs))


def _experts(x, experts, weights, w13, w2):
    return getattr(_mixtral, MOE_EXPERTS.name)(x, experts, weights, w13, w2)


def translation_table() -> dict:
    import mixtral_trt.mixtral_ref.moe  # noqa: F401  (defines torch.ops.mixtral.*)

    return {
        torch.ops.mixtral.moe_router.default: _router,
        torch.ops.mixtral.moe_experts.default: _experts,
    }
