"""TensorRT quick-deployable plugins (`tensorrt.plugin`) for the sparse-dispatch ops (and the quantized GEMMs).

Per plugin: `register` (output shapes and dtypes from symbolic input shapes), `autotune` (the type
combinations of the plugin's spec and, for the GEMMs, the tile tactics of plugins/tiles.py), `aot_impl`
(the Triton kernel compiled to PTX for the build GPU, with its launch grid and scalar arguments as symbolic
expressions: the engine then runs without Python) and `impl` (a JIT fallback through the same launchers).
The ONNX parser maps a node with op_type = plugin name, `plugin_namespace` = "mixtral" and `aot` = 1 to the
AOT implementation.

TensorRT's plugin layer inspects these functions with `inspect.signature`: every `register` argument is
annotated with a class (TensorDesc, int), TensorDescs first, and `register` / `aot_impl` carry return
annotations (the number of outputs is read from `register`'s). This module therefore must not use
`from __future__ import annotations` (string annotations fail the check), and uses typing.Tuple / Union,
which every TensorRT >= 10.9 accepts. `aot_impl` receives every attribute, in registration order.

Checked on CPU against TensorRT's own plugin layer (tests/plugins/test_trt_plugin_layer.py); the engine
itself needs a GPU (tests marked `gpu`).
"""

from typing import Tuple, Union  # noqa: UP035  (see the module docstring)

from mixtral_trt.common.errors import MixtralTrtError

from . import MOE_ALIGN, MOE_GEMM_DOWN, MOE_GEMM_DOWN_Q, MOE_GEMM_SWIGLU, MOE_GEMM_SWIGLU_Q, MOE_ROUTER
from .spec import PluginSpec
from .tiles import TACTICS, tactic_for_tokens, tile_for

TRT_TYPES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16", "i32": "INT32", "u8": "UINT8"}

MIN_TENSORRT = (10, 9)  # the first TensorRT with AOT quick-deployable plugins (aot_impl)
# AOT plugins leak a CUDA module on every input-shape change (NVIDIA/TensorRT#4849, reported for 11.1 and 11.2.1);
# a decoding engine changes its input shapes every step (the KV cache grows). pyproject's `gpu` extra excludes them.
LEAKING_TENSORRT = ((11, 1), (11, 2))

_DEFINED: dict[int, set[str]] = {}  # id(plugin layer module) -> plugins fully defined in it
_FAILED: dict[int, dict[str, str]] = {}  # id(plugin layer module) -> plugin -> first error


def autotune_types(spec: PluginSpec) -> str:
    """The spec's I/O dtypes as an AutoTuneCombination string ("FP32|FP16|BF16, INT32, ..."); "like:x" takes
    x's list, and lists of equal length are index-aligned by TensorRT (x FP16 <-> w13 FP16 <-> out FP16)."""
    by_name = {t.name: t.dtypes for t in spec.inputs}
    parts = []
    for tensor in (*spec.inputs, *spec.outputs):
        dtypes = tensor.dtypes
        if len(dtypes) == 1 and dtypes[0].startswith("like:"):
            dtypes = by_name[dtypes[0][5:]]
        parts.append("|".join(TRT_TYPES[d] for d in dtypes))
    return ", ".join(parts)


def check_tensorrt(version: str) -> None:
    """The plugins need a TensorRT with AOT plugins, minus the releases that leak them (see LEAKING_TENSORRT)."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).release[:2]
    except InvalidVersion:
        raise MixtralTrtError(f"TensorRT version {version!r} is not a version number") from None
    if release < MIN_TENSORRT:
        raise MixtralTrtError(f"TensorRT {version}: the sparse-dispatch plugins are AOT plugins, which need TensorRT "
                              "10.9 or newer")
    if release in LEAKING_TENSORRT:
        raise MixtralTrtError(f"TensorRT {version} leaks a CUDA module on every input-shape change of an AOT plugin "
                              "(NVIDIA/TensorRT#4849) and decoding changes shapes every step: use TensorRT 11.0 or "
                              "11.3 and newer")


def register_plugins() -> None:
    """Register the plugins with TensorRT (`import tensorrt`) once per process, before parsing a network with
    plugin nodes or deserialising a plan that holds them. A plugin whose definition failed is never retried
    (TensorRT's plugin layer keeps half a definition): the first error is raised again."""
    import tensorrt as trt

    check_tensorrt(trt.__version__)
    import tensorrt.plugin as trtp

    key = id(trtp)
    defined, failed = _DEFINED.setdefault(key, set()), _FAILED.setdefault(key, {})
    for name, define in _DEFINITIONS.items():
        if name in defined:
            continue
        if name in failed:
            raise MixtralTrtError(f"TensorRT plugin mixtral::{name} failed to register earlier in this process "
                                  f"({failed[name]}); start a new process")
        try:
            define(trt, trtp)
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
            raise MixtralTrtError(f"TensorRT plugin mixtral::{name} could not be registered: {failed[name]}") from e
        defined.add(name)


# ---- helpers shared by the definitions ------------------------------------------------------------------
def _aot_return(trtp):
    """aot_impl's return annotation, checked by TensorRT: (kernel name, PTX, launch parameters, scalar arguments)."""
    return Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]  # noqa: UP006, UP007


def _dtype_name(trt, dtype) -> str:
    return {trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16"}[dtype]


def _constant(expr, what: str) -> int:
    if not expr.is_constant:
        raise ValueError(f"{what} must be a build-time constant")
    return expr.constant_value()


def _check_sizes(hidden, inter, plugin: str) -> None:
    """The AOT GEMMs assume H and I multiples of 16 (aot.alignment_attrs): refuse others at build."""
    from . import aot

    aot.check_aligned_sizes(_constant(hidden, f"{plugin}: H"), _constant(inter, f"{plugin}: I"),
                            f"TensorRT plugin {plugin}")


def _launch(trtp, variant, grid, extra):
    """(kernel name, PTX, launch parameters, scalar arguments) of a kernel variant compiled for the build GPU."""
    from . import aot

    compiled = aot.compile_variant(variant)  # for the GPU the engine is being built on (PTX for its driver)
    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y = grid
    params.block_x = compiled.num_warps * 32
    params.shared_mem = compiled.shared
    args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in extra])
    return compiled.name.encode(), compiled.ptx.encode(), params, args


def _torch_stream(stream):
    import torch

    return torch.cuda.stream(torch.cuda.ExternalStream(stream))


def _as_torch(*tensors):
    import torch

    return [torch.as_tensor(t, device="cuda") for t in tensors]


def _codes_as_bytes(codes):
    """INT32 elements packing the uint8 codes (what the trt lowering stores) -> the uint8 view the kernels read."""
    import torch

    return codes.view(torch.uint8) if codes.dtype == torch.int32 else codes


def profile_tokens(desc) -> int | None:
    """The token count T (dimension 0) of a GEMM input at the profile's opt point (its static size when static);
    None where the plugin layer gives neither."""
    shape = desc.shape
    try:
        tokens = int(shape.opt[0]) if shape.is_dynamic else int(shape[0])
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    return tokens if tokens > 0 else None


def gemm_tactics(tokens: int | None) -> list[int]:
    """One tactic chosen from the profile's T (timing on made-up index data cannot rank them: tiles.tactic_for_tokens),
    every tactic only where T is unknown."""
    return list(TACTICS) if tokens is None else [tactic_for_tokens(tokens)]


def _combination(trtp, spec: PluginSpec, tactics: bool, tokens: int | None = None):
    combo = trtp.AutoTuneCombination(autotune_types(spec))
    if tactics:
        combo.tactics(gemm_tactics(tokens))
    return [combo]


# ---- MoERouter ------------------------------------------------------------------------------------------
def _define_router(trt, trtp) -> None:
    plugin = MOE_ROUTER.plugin_id
    kernel = _aot_return(trtp)

    @trtp.register(plugin)
    def router_desc(router_logits: trtp.TensorDesc, top_k: int) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:  # noqa: UP006
        t = router_logits.shape_expr[0]
        return (trtp.from_shape_expr((t, top_k), dtype=trt.float32),
                trtp.from_shape_expr((t, top_k), dtype=trt.int32))

    @trtp.autotune(plugin)
    def router_autotune(router_logits, outputs):
        return _combination(trtp, MOE_ROUTER, tactics=False)

    @trtp.aot_impl(plugin)
    def router_aot(router_logits: trtp.TensorDesc, top_k: int, outputs, tactic: int) -> kernel:
        from . import aot
        from .moe_router.launch import BLOCK_T

        t, e = router_logits.shape_expr[0], router_logits.shape_expr[1]
        variant = aot.router_variant(_dtype_name(trt, router_logits.dtype), top_k, _constant(e, "MoERouter: E"))
        return _launch(trtp, variant, (trtp.cdiv(t, BLOCK_T), 1), (t, e))

    @trtp.impl(plugin)
    def router_impl(router_logits, top_k: int, outputs, stream):
        from .moe_router.launch import run

        with _torch_stream(stream):
            logits, weights, experts = _as_torch(router_logits, *outputs)
            run(logits, top_k, out=(weights, experts))


# ---- MoEAlign -------------------------------------------------------------------------------------------
def _define_align(trt, trtp) -> None:
    plugin = MOE_ALIGN.plugin_id
    kernel = _aot_return(trtp)

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
        return _combination(trtp, MOE_ALIGN, tactics=False)

    @trtp.aot_impl(plugin)
    def align_aot(experts: trtp.TensorDesc, num_experts: int, block_size: int, outputs, tactic: int) -> kernel:
        from . import aot

        pairs, m_max, blocks = sizes(experts, num_experts, block_size)
        return _launch(trtp, aot.align_variant(num_experts, block_size), (1, 1), (pairs, num_experts, m_max, blocks))

    @trtp.impl(plugin)
    def align_impl(experts, num_experts: int, block_size: int, outputs, stream):
        from .moe_align.launch import run

        with _torch_stream(stream):
            ex, *outs = _as_torch(experts, *outputs)
            run(ex, num_experts, block_size, out=tuple(outs))


# ---- MoEGemmSwiGLU --------------------------------------------------------------------------------------
def _define_swiglu(trt, trtp) -> None:
    plugin = MOE_GEMM_SWIGLU.plugin_id
    kernel = _aot_return(trtp)

    @trtp.register(plugin)
    def swiglu_desc(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                    num_padded: trtp.TensorDesc, w13: trtp.TensorDesc, top_k: int, block_size: int
                    ) -> trtp.TensorDesc:
        return trtp.from_shape_expr((sorted_pairs.shape_expr[0], w13.shape_expr[1] // 2), dtype=x.dtype)

    @trtp.autotune(plugin)
    def swiglu_autotune(x, sorted_pairs, block_experts, num_padded, w13, outputs):
        return _combination(trtp, MOE_GEMM_SWIGLU, tactics=True, tokens=profile_tokens(x))

    @trtp.aot_impl(plugin)
    def swiglu_aot(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                   num_padded: trtp.TensorDesc, w13: trtp.TensorDesc, top_k: int, block_size: int, outputs,
                   tactic: int) -> kernel:
        from . import aot

        dtype = _dtype_name(trt, x.dtype)
        tile = tile_for(tactic, dtype)
        hidden, inter = x.shape_expr[1], w13.shape_expr[1] // 2
        _check_sizes(hidden, inter, MOE_GEMM_SWIGLU.name)
        variant = aot.gemm_swiglu_variant(dtype, top_k, tactic, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(inter, tile.block_n))
        return _launch(trtp, variant, grid, (hidden, inter, x.shape_expr[0] * top_k, sorted_pairs.shape_expr[0],
                                             w13.shape_expr[0]))

    @trtp.impl(plugin)
    def swiglu_impl(x, sorted_pairs, block_experts, num_padded, w13, top_k: int, block_size: int, outputs,
                    stream, tactic: int):
        from .moe_gemm_swiglu.launch import run

        with _torch_stream(stream):
            *ins, out = _as_torch(x, sorted_pairs, block_experts, num_padded, w13, outputs[0])
            run(*ins, top_k, block_size, tactic=tactic, out=out)


# ---- MoEGemmDown ----------------------------------------------------------------------------------------
def _define_down(trt, trtp) -> None:
    plugin = MOE_GEMM_DOWN.plugin_id
    kernel = _aot_return(trtp)

    @trtp.register(plugin)
    def down_desc(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                  num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2: trtp.TensorDesc, top_k: int,
                  block_size: int) -> trtp.TensorDesc:
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        return trtp.from_shape_expr((pairs, w2.shape_expr[1]), dtype=trt.float32)

    @trtp.autotune(plugin)
    def down_autotune(inter, sorted_pairs, block_experts, num_padded, weights, w2, outputs):
        return _combination(trtp, MOE_GEMM_DOWN, tactics=True, tokens=profile_tokens(weights))

    @trtp.aot_impl(plugin)
    def down_aot(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                 num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2: trtp.TensorDesc, top_k: int,
                 block_size: int, outputs, tactic: int) -> kernel:
        from . import aot

        dtype = _dtype_name(trt, inter.dtype)
        tile = tile_for(tactic, dtype)
        hidden, inter_size = w2.shape_expr[1], w2.shape_expr[2]
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        _check_sizes(hidden, inter_size, MOE_GEMM_DOWN.name)
        variant = aot.gemm_down_variant(dtype, tactic, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(hidden, tile.block_n))
        return _launch(trtp, variant, grid, (hidden, inter_size, pairs, sorted_pairs.shape_expr[0], w2.shape_expr[0]))

    @trtp.impl(plugin)
    def down_impl(inter, sorted_pairs, block_experts, num_padded, weights, w2, top_k: int, block_size: int,
                  outputs, stream, tactic: int):
        from .moe_gemm_down.launch import run

        with _torch_stream(stream):
            *ins, out = _as_torch(inter, sorted_pairs, block_experts, num_padded, weights, w2, outputs[0])
            run(*ins, top_k, block_size, tactic=tactic, out=out)


# ---- quantized GEMMs (weight-only int8 / int4; codes arrive as INT32 elements, read as bytes) -------------
def _define_swiglu_q(trt, trtp) -> None:
    plugin = MOE_GEMM_SWIGLU_Q.plugin_id
    kernel = _aot_return(trtp)

    @trtp.register(plugin)
    def swiglu_q_desc(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                      num_padded: trtp.TensorDesc, w13_codes: trtp.TensorDesc, w13_scales: trtp.TensorDesc,
                      top_k: int, block_size: int, bits: int, quant_block: int) -> trtp.TensorDesc:
        return trtp.from_shape_expr((sorted_pairs.shape_expr[0], w13_codes.shape_expr[1] // 2), dtype=x.dtype)

    @trtp.autotune(plugin)
    def swiglu_q_autotune(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, outputs):
        return _combination(trtp, MOE_GEMM_SWIGLU_Q, tactics=True, tokens=profile_tokens(x))

    @trtp.aot_impl(plugin)
    def swiglu_q_aot(x: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                     num_padded: trtp.TensorDesc, w13_codes: trtp.TensorDesc, w13_scales: trtp.TensorDesc,
                     top_k: int, block_size: int, bits: int, quant_block: int, outputs, tactic: int) -> kernel:
        from . import aot

        dtype = _dtype_name(trt, x.dtype)
        tile = tile_for(tactic, dtype, quantized=True)
        hidden, inter = x.shape_expr[1], w13_codes.shape_expr[1] // 2
        _check_sizes(hidden, inter, MOE_GEMM_SWIGLU_Q.name)
        group = quant_block or _constant(hidden, "MoEGemmSwiGLUQ: H")
        variant = aot.gemm_swiglu_q_variant(dtype, top_k, tactic, bits, group, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(inter, tile.block_n))
        return _launch(trtp, variant, grid, (hidden, inter, x.shape_expr[0] * top_k, sorted_pairs.shape_expr[0],
                                             w13_codes.shape_expr[0]))

    @trtp.impl(plugin)
    def swiglu_q_impl(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales, top_k: int,
                      block_size: int, bits: int, quant_block: int, outputs, stream, tactic: int):
        from .moe_gemm_swiglu_q.launch import run

        with _torch_stream(stream):
            *ins, scales, out = _as_torch(x, sorted_pairs, block_experts, num_padded, w13_codes, w13_scales,
                                          outputs[0])
            ins[4] = _codes_as_bytes(ins[4])
            run(*ins, scales, top_k, block_size, bits, quant_block, tactic=tactic, out=out)


def _define_down_q(trt, trtp) -> None:
    plugin = MOE_GEMM_DOWN_Q.plugin_id
    kernel = _aot_return(trtp)

    @trtp.register(plugin)
    def down_q_desc(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                    num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2_codes: trtp.TensorDesc,
                    w2_scales: trtp.TensorDesc, top_k: int, block_size: int, bits: int, quant_block: int
                    ) -> trtp.TensorDesc:
        pairs = weights.shape_expr[0] * weights.shape_expr[1]
        return trtp.from_shape_expr((pairs, w2_codes.shape_expr[1]), dtype=trt.float32)

    @trtp.autotune(plugin)
    def down_q_autotune(inter, sorted_pairs, block_experts, num_padded, weights, w2_codes, w2_scales, outputs):
        return _combination(trtp, MOE_GEMM_DOWN_Q, tactics=True, tokens=profile_tokens(weights))

    @trtp.aot_impl(plugin)
    def down_q_aot(inter: trtp.TensorDesc, sorted_pairs: trtp.TensorDesc, block_experts: trtp.TensorDesc,
                   num_padded: trtp.TensorDesc, weights: trtp.TensorDesc, w2_codes: trtp.TensorDesc,
                   w2_scales: trtp.TensorDesc, top_k: int, block_size: int, bits: int, quant_block: int, outputs,
                   tactic: int) -> kernel:
        from . import aot

        dtype = _dtype_name(trt, inter.dtype)
        tile = tile_for(tactic, dtype, quantized=True)
        hidden, inter_size = w2_codes.shape_expr[1], inter.shape_expr[1]
        _check_sizes(hidden, inter_size, MOE_GEMM_DOWN_Q.name)
        group = quant_block or _constant(inter_size, "MoEGemmDownQ: I")
        variant = aot.gemm_down_q_variant(dtype, tactic, bits, group, block_size)
        grid = (trtp.cdiv(sorted_pairs.shape_expr[0], tile.block_m), trtp.cdiv(hidden, tile.block_n))
        return _launch(trtp, variant, grid, (hidden, inter_size, weights.shape_expr[0] * weights.shape_expr[1],
                                             sorted_pairs.shape_expr[0], w2_codes.shape_expr[0]))

    @trtp.impl(plugin)
    def down_q_impl(inter, sorted_pairs, block_experts, num_padded, weights, w2_codes, w2_scales, top_k: int,
                    block_size: int, bits: int, quant_block: int, outputs, stream, tactic: int):
        from .moe_gemm_down_q.launch import run

        with _torch_stream(stream):
            *ins, out = _as_torch(inter, sorted_pairs, block_experts, num_padded, weights, w2_codes, w2_scales,
                                  outputs[0])
            ins[5] = _codes_as_bytes(ins[5])
            run(*ins, top_k, block_size, bits, quant_block, tactic=tactic, out=out)


_DEFINITIONS = {
    MOE_ROUTER.name: _define_router,
    MOE_ALIGN.name: _define_align,
    MOE_GEMM_SWIGLU.name: _define_swiglu,
    MOE_GEMM_DOWN.name: _define_down,
    MOE_GEMM_SWIGLU_Q.name: _define_swiglu_q,
    MOE_GEMM_DOWN_Q.name: _define_down_q,
}
