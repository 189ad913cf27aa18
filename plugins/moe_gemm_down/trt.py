"""MoEGemmDown's TensorRT plugin (plugins/trt_registry.py defines it; real annotations, see there)."""

from .. import trt_common as tc
from ..tiles import tile_for
from . import SPEC
from .aot import variant as kernel_variant


def define(trt, trtp) -> None:
    plugin = SPEC.plugin_id
    kernel = tc.aot_return(trtp)

    @trtp.register(plugin)
    def down_desc(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                  num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2: trtp.TensorDesc, top_k: int,
                  block_size: int) -> trtp.TensorDesc:
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        return trtp.from_shape_expr((pairs, w2.shape_expr[1]), dtype=trt.float32)

    @trtp.autotune(plugin)
    def down_autotune(inter, sorted_pairs, block_experts, num_padded, weights, w2, outputs):
        return tc.combination(trtp, SPEC, tactics=True, tokens=tc.profile_tokens(weights))

    @trtp.aot_impl(plugin)
    def down_aot(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                 num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2: trtp.TensorDesc, top_k: int,
                 block_size: int, outputs, tactic: int) -> kernel:
        dtype = tc.dtype_name(trt, inter.dtype)
        tile = tile_for(tactic, dtype)
        hidden, inter_size = w2.shape_expr[1], w2.shape_expr[2]
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        tc.check_sizes(hidden, inter_size, SPEC.name)
        variant = kernel_variant(dtype, tactic, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(hidden, tile.block_n))
        return tc.launch(trtp, variant, grid, (hidden, inter_size, pairs, sorted_pairs.shape_expr[0], w2.shape_expr[0]))

    @trtp.impl(plugin)
    def down_impl(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k: int, block_size: int,
                  outputs, stream, tactic: int):
        from .launch import run

        with tc.torch_stream(stream):
            *ins, out = tc.as_torch(inter, sorted_pairs, block_experts, num_padded, weights, w2, outputs[0])
            run(*ins, top_k, block_size, tactic=tactic, out=out)
