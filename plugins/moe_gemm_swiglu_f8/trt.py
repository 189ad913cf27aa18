"""MoEGemmSwiGLUF8's TensorRT plugin (plugins/trt_registry.py defines it; real annotations, see there)."""

from .. import trt_common as tc
from ..tiles import tile_for
from . import SPEC
from .aot import variant as kernel_variant


def define(trt, trtp) -> None:
    plugin = SPEC.plugin_id
    kernel = tc.aot_return(trtp)
    # w13_codes: INT32 elements packing the e4m3fn bytes (TensorRT's ONNX parser widens UINT8), read as bytes

    @trtp.register(plugin)
    def swiglu_f8_desc(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                       num_padded: trtp.TensorDesc, w13_codes: trtp.TensorDesc, w13_scales: trtp.TensorDesc,
                       top_k: int, block_size: int) -> trtp.TensorDesc:
        return trtp.from_shape_expr((sorted_pairs.shape_expr[0], w13_codes.shape_expr[1] // 2), dtype=x.dtype)

    @trtp.autotune(plugin)
    def swiglu_f8_autotune(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, outputs):
        return tc.combination(trtp, SPEC, tactics=True, tokens=tc.profile_tokens(x))

    @trtp.aot_impl(plugin)
    def swiglu_f8_aot(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                      num_padded: trtp.TensorDesc, w13_codes: trtp.TensorDesc, w13_scales: trtp.TensorDesc,
                      top_k: int, block_size: int, outputs, tactic: int) -> kernel:
        dtype = tc.dtype_name(trt, x.dtype)
        tile = tile_for(tactic, dtype, quantized=True, f8=True)
        hidden, inter = x.shape_expr[1], w13_codes.shape_expr[1] // 2
        tc.check_sizes(hidden, inter, SPEC.name)
        variant = kernel_variant(dtype, top_k, tactic, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(inter, tile.block_n))
        return tc.launch(trtp, variant, grid, (hidden, inter, x.shape_expr[0] * top_k, sorted_pairs.shape_expr[0],
                                             w13_codes.shape_expr[0]))

    @trtp.impl(plugin)
    def swiglu_f8_impl(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, top_k: int,
                       block_size: int, outputs, stream, tactic: int):
        from .launch import run

        with tc.torch_stream(stream):
            *ins, scales, out = tc.as_torch(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales,
                                          outputs[0])
            ins[4] = tc.codes_as_bytes(ins[4])
            run(*ins, scales, top_k, block_size, tactic=tactic, out=out)
