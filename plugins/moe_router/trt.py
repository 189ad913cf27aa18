"""MoERouter's TensorRT plugin (plugins/trt_registry.py defines it; real annotations, see there)."""

from typing import Tuple  # noqa: UP035  (real annotations: plugins/trt_registry.py)

from .. import trt_common as tc
from . import SPEC
from .aot import variant as kernel_variant


def define(trt, trtp) -> None:
    plugin = SPEC.plugin_id
    kernel = tc.aot_return(trtp)

    @trtp.register(plugin)
    def router_desc(router_logits: trtp.TensorDesc, top_k: int) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:  # noqa: UP006
        t = router_logits.shape_expr[0]
        return (trtp.from_shape_expr((t, top_k), dtype=trt.float32),
                trtp.from_shape_expr((t, top_k), dtype=trt.int32))

    @trtp.autotune(plugin)
    def router_autotune(router_logits, outputs):
        return tc.combination(trtp, SPEC, tactics=False)

    @trtp.aot_impl(plugin)
    def router_aot(router_logits: trtp.TensorDesc, top_k: int, outputs, tactic: int) -> kernel:
        from .launch import BLOCK_T

        t, e = router_logits.shape_expr[0], router_logits.shape_expr[1]
        variant = kernel_variant(tc.dtype_name(trt, router_logits.dtype), top_k, tc.constant(e, "MoERouter: E"))
        return tc.launch(trtp, variant, (trtp.cdiv(t, BLOCK_T), 1), (t, e))

    @trtp.impl(plugin)
    def router_impl(router_logits, top_k: int, outputs, stream):
        from .launch import run

        with tc.torch_stream(stream):
            logits, weights, experts = tc.as_torch(router_logits, *outputs)
            run(logits, top_k, out=(weights, experts))
