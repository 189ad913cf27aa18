"""TensorRT quick-deployable plugins (`tensorrt.plugin`) for the sparse-dispatch ops (and the quantized GEMMs).

Per plugin: `register` (output shapes and dtypes from symbolic input shapes), `autotune` (type
combinations and, for the GEMMs, the tile tactics of plugins/tiles.py), `aot_impl` (the Triton kernel
compiled to PTX for the build GPU, with its launch grid and scalar arguments as symbolic expressions —
the engine then runs without Python) and `impl` (a JIT fallback launching the same kernel from Python).
The ONNX parser maps a node with op_type = plugin name, `plugin_namespace` = "mixtral" and `aot` = 1 to
the AOT implementation.

Written against the documented TensorRT 10.x/11 Python API. This machine has no GPU and no TensorRT:
this module has NOT been executed here (tests/plugins/test_trt_plugins.py runs it under `-m gpu`).
"""

from __future__ import annotations

from . import MOE_ALIGN, MOE_GEMM_DOWN, MOE_GEMM_DOWN_Q, MOE_GEMM_SWIGLU, MOE_GEMM_SWIGLU_Q, MOE_ROUTER
from .tiles import TACTICS, tile_for

_REGISTERED = False


def register_plugins() -> None:
    """Register the six plugins with TensorRT once per process (before parsing or deserialising)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _define()
    _REGISTERED = True


def _define() -> None:  # noqa: C901  (six small plugin definitions, kept together)
    import tensorrt as trt
    import tensorrt.plugin as trtp

    from . import aot

    dtype_names = {trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16"}

    def constant(expr, what: str) -> int:
        if not expr.is_constant:
            raise ValueError(f"{what} must be a build-time constant")
        return expr.constant_value()

    def launch(variant, grid, extra):
        compiled = aot.compile_variant(variant)  # for the GPU the engine is being built on
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y = grid
        params.block_x = compiled.num_warps * 32
        params.shared_mem = compiled.shared
        args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in extra])
        return compiled.name.encode(), compiled.ptx.encode(), params, args

    def torch_stream(stream):
        import torch

        return torch.cuda.stream(torch.cuda.ExternalStream(stream))

    def as_torch(*tensors):
        import torch

        return [torch.as_tensor(t, device="cuda") for t in tensors]

    # ---- MoERouter ------------------------------------------------------------------------------------
    @trtp.register(MOE_ROUTER.plugin_id)
    def router_desc(router_logits: trtp.TensorDesc, top_k: int):
        t = router_logits.shape_expr[0]
        return (trtp.from_shape_expr((t, top_k), dtype=trt.float32),
                trtp.from_shape_expr((t, top_k), dtype=trt.int32))

    @trtp.autotune(MOE_ROUTER.plugin_id)
    def router_autotune(router_logits, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16|BF16, FP32, INT32")]

    @trtp.aot_impl(MOE_ROUTER.plugin_id)
    def router_aot(router_logits: trtp.TensorDesc, top_k: int, outputs, tactic: int):
        from .moe_router.launch import BLOCK_T

        t, e = router_logits.shape_expr[0], router_logits.shape_expr[1]
        variant = aot.router_variant(dtype_names[router_logits.dtype], top_k, constant(e, "MoERouter: E"))
        return launch(variant, (trtp.cdiv(t, BLOCK_T), 1), (t, e))

    @trtp.impl(MOE_ROUTER.plugin_id)
    def router_impl(router_logits, top_k: int, outputs, stream):
        from .moe_router.launch import run

        with torch_stream(stream):
            logits, weights, experts = as_torch(router_logits, *outputs)
            run(logits, top_k, out=(weights, experts))

    # ---- MoEAlign -------------------------------------------------------------------------------------
    def align_sizes(experts, num_experts: int, block_size: int):
        pairs = experts.shape_expr[0] * experts.shape_expr[1]
        m_max = pairs + num_experts * (block_size - 1)
        return pairs, m_max, trtp.cdiv(m_max, block_size)

    @trtp.register(MOE_ALIGN.plugin_id)
    def align_desc(experts: trtp.TensorDesc, num_experts: int, block_size: int):
        _, m_max, blocks = align_sizes(experts, num_experts, block_size)
        return (trtp.from_shape_expr((m_max,), dtype=trt.int32), trtp.from_shape_expr((blocks,), dtype=trt.int32),
                trtp.from_shape_expr((1,), dtype=trt.int32))

    @trtp.autotune(MOE_ALIGN.plugin_id)
    def align_autotune(experts, outputs):
        return [trtp.AutoTuneCombination("INT32, INT32, INT32, INT32")]

    @trtp.aot_impl(MOE_ALIGN.plugin_id)
    def align_aot(experts: trtp.TensorDesc, num_experts: int, block_size: int, outputs, tactic: int):
        pairs, m_max, blocks = align_sizes(experts, num_experts, block_size)
        return launch(aot.align_variant(num_experts, block_size), (1, 1), (pairs, num_experts, m_max, blocks))

    @trtp.impl(MOE_ALIGN.plugin_id)
    def align_impl(experts, num_experts: int, block_size: int, outputs, stream):
        from .moe_align.launch import run

        with torch_stream(stream):
            ex, *outs = as_torch(experts, *outputs)
            run(ex, num_experts, block_size, out=tuple(outs))

    # ---- MoEGemmSwiGLU --------------------------------------------------------------------------------
    @trtp.register(MOE_GEMM_SWIGLU.plugin_id)
    def swiglu_desc(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                    num_padded: trtp.TensorDesc, w13: trtp.TensorDesc, top_k: int, block_size: int):
        inter = w13.shape_expr[1] // 2
        return trtp.from_shape_expr((sorted_pairs.shape_expr[0], inter), dtype=x.dtype)

    @trtp.autotune(MOE_GEMM_SWIGLU.plugin_id)
    def swiglu_autotune(x, sorted_pairs, block_experts, num_padded, w13, outputs):
        combo = trtp.AutoTuneCombination("FP32|FP16|BF16, INT32, INT32, INT32, FP32|FP16|BF16, FP32|FP16|BF16")
        combo.tactics(list(TACTICS))
        return [combo]

    @trtp.aot_impl(MOE_GEMM_SWIGLU.plugin_id)
    def swiglu_aot(x: trtp.TensorDesc, sorted_pairs, block_experts, num_padded, w13: trtp.TensorDesc,
                   top_k: int, block_size: int, outputs, tactic: int):
        dtype = dtype_names[x.dtype]
        tile = tile_for(tactic, dtype)
        hidden, inter = x.shape_expr[1], w13.shape_expr[1] // 2
        variant = aot.gemm_swiglu_variant(dtype, top_k, tactic, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(inter, tile.block_n))
        return launch(variant, grid, (hidden, inter, x.shape_expr[0] * top_k))

    @trtp.impl(MOE_GEMM_SWIGLU.plugin_id)
    def swiglu_impl(x, sorted_pairs, block_experts, num_padded, w13, top_k: int, block_size: int, outputs,
                    stream, tactic: int):
        from .moe_gemm_swiglu.launch import run

        with torch_stream(stream):
            *ins, out = as_torch(x, sorted_pairs, block_experts, num_padded, w13, outputs[0])
            run(*ins, top_k, block_size, tactic=tactic, out=out)

    # ---- MoEGemmDown ----------------------------------------------------------------------------------
    @trtp.register(MOE_GEMM_DOWN.plugin_id)
    def down_desc(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                  num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2: trtp.TensorDesc, top_k: int,
                  block_size: int):
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        return trtp.from_shape_expr((pairs, w2.shape_expr[1]), dtype=trt.float32)

    @trtp.autotune(MOE_GEMM_DOWN.plugin_id)
    def down_autotune(inter, sorted_pairs, block_experts, num_padded, weights, w2, outputs):
        combo = trtp.AutoTuneCombination("FP32|FP16|BF16, INT32, INT32, INT32, FP32, FP32|FP16|BF16, FP32")
        combo.tactics(list(TACTICS))
        return [combo]

    @trtp.aot_impl(MOE_GEMM_DOWN.plugin_id)
    def down_aot(inter: trtp.TensorDesc, sorted_pairs, block_experts, num_padded, weights: trtp.TensorDesc,
                 w2: trtp.TensorDesc, top_k: int, block_size: int, outputs, tactic: int):
        dtype = dtype_names[inter.dtype]
        tile = tile_for(tactic, dtype)
        hidden, inter_size = w2.shape_expr[1], w2.shape_expr[2]
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        variant = aot.gemm_down_variant(dtype, tactic, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(hidden, tile.block_n))
        return launch(variant, grid, (hidden, inter_size, pairs))

    @trtp.impl(MOE_GEMM_DOWN.plugin_id)
    def down_impl(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k: int, block_size: int,
                  outputs, stream, tactic: int):
        from .moe_gemm_down.launch import run

        with torch_stream(stream):
            *ins, out = as_torch(inter, sorted_pairs, block_experts, num_padded, weights, w2, outputs[0])
            run(*ins, top_k, block_size, tactic=tactic, out=out)

    # ---- quantized GEMMs (weight-only int8 / int4, dequantized in the kernel) ---------------------------
    float_combo = "FP32|FP16|BF16"

    @trtp.register(MOE_GEMM_SWIGLU_Q.plugin_id)
    def swiglu_q_desc(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                      num_padded: trtp.TensorDesc, w13_codes: trtp.TensorDesc, w13_scales: trtp.TensorDesc,
                      top_k: int, block_size: int, bits: int, quant_block: int):
        return trtp.from_shape_expr((sorted_pairs.shape_expr[0], w13_codes.shape_expr[1] // 2), dtype=x.dtype)

    @trtp.autotune(MOE_GEMM_SWIGLU_Q.plugin_id)
    def swiglu_q_autotune(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, outputs):
        combo = trtp.AutoTuneCombination(f"{float_combo}, INT32, INT32, INT32, UINT8, {float_combo}, {float_combo}")
        combo.tactics(list(TACTICS))
        return [combo]

    @trtp.aot_impl(MOE_GEMM_SWIGLU_Q.plugin_id)
    def swiglu_q_aot(x: trtp.TensorDesc, sorted_pairs, block_experts, num_padded, w13_codes: trtp.TensorDesc,
                     w13_scales, top_k: int, block_size: int, bits: int, quant_block: int, outputs, tactic: int):
        dtype = dtype_names[x.dtype]
        tile = tile_for(tactic, dtype, quantized=True)
        hidden, inter = x.shape_expr[1], w13_codes.shape_expr[1] // 2
        group = quant_block or constant(hidden, "MoEGemmSwiGLUQ: H")
        variant = aot.gemm_swiglu_q_variant(dtype, top_k, tactic, bits, group, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(inter, tile.block_n))
        return launch(variant, grid, (hidden, inter, x.shape_expr[0] * top_k))

    @trtp.impl(MOE_GEMM_SWIGLU_Q.plugin_id)
    def swiglu_q_impl(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, top_k: int,
                      block_size: int, bits: int, quant_block: int, outputs, stream, tactic: int):
        from .moe_gemm_swiglu_q.launch import run

        with torch_stream(stream):
            *ins, out = as_torch(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, outputs[0])
            run(*ins, top_k, block_size, bits, quant_block, tactic=tactic, out=out)

    @trtp.register(MOE_GEMM_DOWN_Q.plugin_id)
    def down_q_desc(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                    num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2_codes: trtp.TensorDesc,
                    w2_scales: trtp.TensorDesc, top_k: int, block_size: int, bits: int, quant_block: int):
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        return trtp.from_shape_expr((pairs, w2_codes.shape_expr[1]), dtype=trt.float32)

    @trtp.autotune(MOE_GEMM_DOWN_Q.plugin_id)
    def down_q_autotune(inter, sorted_pairs, block_experts, num_padded, weights, w2_codes, w2_scales, outputs):
        combo = trtp.AutoTuneCombination(f"{float_combo}, INT32, INT32, INT32, FP32, UINT8, {float_combo}, FP32")
        combo.tactics(list(TACTICS))
        return [combo]

    @trtp.aot_impl(MOE_GEMM_DOWN_Q.plugin_id)
    def down_q_aot(inter: trtp.TensorDesc, sorted_pairs, block_experts, num_padded, weights: trtp.TensorDesc,
                   w2_codes: trtp.TensorDesc, w2_scales, top_k: int, block_size: int, bits: int, quant_block: int,
                   outputs, tactic: int):
        dtype = dtype_names[inter.dtype]
        tile = tile_for(tactic, dtype, quantized=True)
        hidden, inter_size = w2_codes.shape_expr[1], inter.shape_expr[1]
        group = quant_block or constant(inter_size, "MoEGemmDownQ: I")
        variant = aot.gemm_down_q_variant(dtype, tactic, bits, group, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(hidden, tile.block_n))
        return launch(variant, grid, (hidden, inter_size, weights.shape_expr[0] * weights.shape_expr[1]))

    @trtp.impl(MOE_GEMM_DOWN_Q.plugin_id)
    def down_q_impl(inter, sorted_pairs, block_experts, num_padded, weights, w2_codes, w2_scales, top_k: int,
                    block_size: int, bits: int, quant_block: int, outputs, stream, tactic: int):
        from .moe_gemm_down_q.launch import run

        with torch_stream(stream):
            *ins, out = as_torch(inter, sorted_pairs, block_experts, num_padded, weights, w2_codes, w2_scales,
                                 outputs[0])
            run(*ins, top_k, block_size, bits, quant_block, tactic=tactic, out=out)
