"""MoEAlign's TensorRT plugin (plugins/trt_registry.py defines it; real annotations, see there)."""

from typing import Tuple  # noqa: UP035  (real annotations: plugins/trt_registry.py)

from .. import trt_common as tc
from . import SPEC
from .aot import variant as kernel_variant


def define(trt, trtp) -> None:
    plugin = SPEC.plugin_id
    kernel = tc.aot_return(trtp)

    def sizes(experts, num_experts: int, block_size: int):
        pairs = experts.shape_expr[0] * experts.shape_expr[1]
        m_max = pairs + num_experts * (block_size - 1)
        return pairs, m_max, trtp.cdiv(m_max, block_size)

    @trtp.register(plugin)
    def align_desc(experts: trtp.TensorDesc, num_experts: int, block_size: int
                   ) -> Tuple[trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc]:  # noqa: UP006
        _, m_max, blocks = sizes(experts, num_experts, block_size)
        return (trtp.from_shape_expr((m_max,), dtype=trt.int32), trtp.from_shape_expr((blocks,), dtype=trt.int32),
                trtp.from_shape_expr((1,), dtype=trt.int32))

    @trtp.autotune(plugin)
    def align_autotune(experts, outputs):
        return tc.combination(trtp, SPEC, tactics=False)

    @trtp.aot_impl(plugin)
    def align_aot(experts: trtp.TensorDesc, num_experts: int, block_size: int, outputs, tactic: int) -> kernel:
        pairs, m_max, blocks = sizes(experts, num_experts, block_size)
        return tc.launch(trtp, kernel_variant(num_experts, block_size), (1, 1), (pairs, num_experts, m_max, blocks))

    @trtp.impl(plugin)
    def align_impl(experts, num_experts: int, block_size: int, outputs, stream):
        from .launch import run

        with tc.torch_stream(stream):
            ex, *outs = tc.as_torch(experts, *outputs)
            run(ex, num_experts, block_size, out=tuple(outs))
