"""The TensorRT registrations (plugins/trt_registry.py) under TensorRT's own plugin layer, on CPU.

TensorRT's `tensorrt.plugin` (the real package of the tensorrt-cu13-bindings wheel) runs with TensorRT-RTX's
bindings standing in for TensorRT's compiled module (support/tensorrt_standin.py), and every plugin node of a
`trt`-lowered MoE layer (Mixtral 8x7B sizes: E 8, k 2, H 4096, I 14336; fp32 / fp16 / bf16; float, int8 and
int4 experts) goes through what TensorRT's builder calls (support/trt_plugin_layer.py). The oracle is the
Python launchers (plugins/*/launch.py, what the CPU and JIT paths run), at T = 1, 5 and 300 tokens: the
network's types are one of the plugin's supported combinations; for every tactic, grid, block, shared memory
and scalar arguments equal the launcher's, and so do the argument layout (inputs, scalars, outputs), the
constexprs, warps and stages, the pointer types and every buffer's size in bytes (int8 / int4 codes packed
as INT32 elements); the PTX TensorRT gets takes exactly those arguments, at the `--cuda` target's version.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from mixtral_trt.plugins import PLUGINS, aot, ptx
from support.aot import CUDA
from support.moe_layer_graph import moe_layer, moe_layer_f8, moe_layer_stored
from support.trt_plugin_layer import KernelLaunch, PluginNode, drive

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None or importlib.util.find_spec("tensorrt_bindings") is None,
    reason="needs tensorrt-rtx-cu13 and tensorrt-cu13-bindings (the dev extra)")

MIXTRAL = {"experts": 8, "top_k": 2, "hidden": 4096, "inter": 14336}  # 8x7B: `plugins compile`'s default set
SIZES = (1, 5, 300)
VARIANTS = [(dtype, quant) for quant in (None, "int8", "int4") for dtype in ("fp32", "fp16", "bf16")]
TORCH = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32}
TRITON = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.int32: "*i32",
          torch.uint8: "*u8"}


@pytest.fixture(scope="module")
def trt():
    """The stand-in `tensorrt`, with TensorRT's plugin layer and our plugins registered in it."""
    from mixtral_trt.plugins.trt_registry import register_plugins
    from support import tensorrt_standin

    with tensorrt_standin.installed() as (module, _):
        register_plugins()
    return module


@pytest.fixture(scope="module")
def kernels(sm90a_kernels):
    """The compiled default variants by stem, with their PTX."""
    out, index = sm90a_kernels
    return {k["stem"]: {**k, "ptx": (out / f"{k['stem']}.ptx").read_text()} for k in index["kernels"]}


@dataclass
class Call:
    grid: tuple
    args: tuple
    kwargs: dict


class Recorder:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kwargs)` records the launch."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(Call(tuple(grid), args, kwargs))


def run_launcher(monkeypatch, node: PluginNode, variant: aot.KernelVariant, sizes: dict[str, int], tactic: int):
    """The plugin's Python launcher on meta tensors of the node's shapes at `sizes`: (its inputs, its one launch,
    the outputs it allocated)."""
    spec = PLUGINS[node.op_type]
    inputs = []
    for trt_type, dims, tensor in zip(node.input_types, node.input_shapes, spec.inputs, strict=True):
        x = torch.empty([d.evaluate(sizes) for d in dims], dtype=TORCH[trt_type.name], device="meta")
        inputs.append(x.view(torch.uint8) if tensor.name.endswith(("_codes", "_zeros")) else x)  # what kernels read
    recorder = Recorder()
    monkeypatch.setattr(importlib.import_module(f"mixtral_trt.plugins.{variant.folder}.kernel"), variant.kernel,
                        recorder)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the launchers' GPU path (no bf16 -> fp32 copies)
    run = importlib.import_module(f"mixtral_trt.plugins.{spec.folder}.launch").run  # F8: the Q kernels
    outputs = run(*inputs, *node.attributes.values(), **({"tactic": tactic} if node.tactics != [0] else {}))
    assert len(recorder.calls) == 1, f"{node.op_type}: {len(recorder.calls)} launches"
    return inputs, recorder.calls[0], outputs if isinstance(outputs, tuple) else (outputs,)


def check_launch(monkeypatch, node: PluginNode, launch: KernelLaunch, variant, shared: int, t: int) -> None:
    """TensorRT's launch of `launch` at T = t against the launcher's."""
    sizes = {"T": t}
    inputs, call, outputs = run_launcher(monkeypatch, node, variant, sizes, launch.tactic)
    n_in, n_out = len(node.input_types), len(node.output_types)
    tensors, scalars = call.args[:n_in] + call.args[-n_out:], call.args[n_in:-n_out]
    assert all(isinstance(a, torch.Tensor) for a in tensors), \
        f"{node.op_type}: launcher arguments are not (inputs, scalars, outputs): {call.args}"
    ours = launch.at(sizes)
    theirs = {"grid": call.grid + (1,) * (3 - len(call.grid)), "block": (call.kwargs.get("num_warps", 4) * 32, 1, 1),
              "shared_mem": shared, "extra_args": tuple(scalars)}
    assert ours == theirs, f"{node.op_type} tactic {launch.tactic} T={t}: TensorRT {ours}, launcher {theirs}"
    constexprs = {k: v for k, v in call.kwargs.items() if k not in ("num_warps", "num_stages")}
    assert constexprs == variant.constexprs, f"{node.op_type}: launcher {constexprs}, AOT {variant.constexprs}"
    assert (call.kwargs.get("num_warps", 4), call.kwargs.get("num_stages", 3)) == (variant.num_warps,
                                                                                  variant.num_stages)
    pointers = [v for v in variant.signature.values() if v.startswith("*")]
    assert [TRITON[a.dtype] for a in tensors] == pointers, f"{node.op_type}: pointer types vs AOT {pointers}"
    for i, (trt_type, dims) in enumerate(zip(node.input_types + node.output_types,
                                             node.input_shapes + node.output_shapes, strict=True)):
        theirs_bytes = (inputs + list(outputs))[i].untyped_storage().nbytes()
        ours_bytes = torch.empty([d.evaluate(sizes) for d in dims], dtype=TORCH[trt_type.name],
                                 device="meta").untyped_storage().nbytes()
        assert ours_bytes == theirs_bytes, \
            f"{node.op_type} I/O {i} T={t}: TensorRT's buffer {ours_bytes} bytes, the launcher's {theirs_bytes}"


@pytest.fixture
def compiled_variants(kernels, monkeypatch):
    """aot.compile_variant answered from `plugins compile --arch sm_90a --cuda 12.8`'s output (TensorRT's aot_impl
    compiles for the build GPU; here the same variant); returns PTX -> the variant asked for."""
    requested = {}

    def compile_stub(variant, where=None):
        if variant.stem not in kernels:
            raise AssertionError(f"aot_impl asks for {variant.stem}, which `plugins compile` does not write")
        k = kernels[variant.stem]
        requested[k["ptx"]] = variant
        return aot.Compiled(k["symbol"], k["ptx"], None, k["num_warps"], k["shared_bytes"], ptx.written_ptx(k["ptx"]))

    monkeypatch.setattr(aot, "compile_variant", compile_stub)
    return requested


def check_layer(trt, kernels, requested, monkeypatch, nodes, gemms: tuple[str, str], bits: int | None,
                sizes: dict[str, int] = MIXTRAL) -> int:
    """Every plugin node of a lowered layer (of `sizes`: experts, hidden, inter) through TensorRT's plugin layer
    against the launchers; the launches checked."""
    assert [n.op_type for n in nodes] == ["MoERouter", "MoEAlign", *gemms]
    checked = 0
    for node in nodes:
        network = tuple((t, trt.TensorFormat.LINEAR) for t in node.input_types + node.output_types)
        assert network in node.supported, (
            f"{node.op_type}: the network's types {[t.name for t in node.input_types + node.output_types]} are not "
            f"among the plugin's combinations {[[t.name for t, _ in c] for c in node.supported]}")
        assert node.tactics == ([0] if node.op_type in ("MoERouter", "MoEAlign") else [1, 2, 3])
        if bits and "Gemm" in node.op_type:  # TensorRT holds the codes' bytes, not the bytes widened to int32
            codes = next(j for j, x in enumerate(PLUGINS[node.op_type].inputs) if x.name.endswith("_codes"))
            weights = sizes["experts"] * sizes["hidden"] * sizes["inter"] * (2 if "SwiGLU" in node.op_type else 1)
            held = 4 * int(torch.Size([d.get_constant_value() for d in node.input_shapes[codes]]).numel())
            assert node.input_types[codes] == trt.int32 and held == weights * bits // 8
        for launch in node.launches:
            variant = requested[launch.ptx]
            name, params = ptx.entry_params(launch.ptx)
            assert name == launch.kernel_name
            assert len(params) == len(node.input_types) + len(launch.extra_args) + len(node.output_types), (
                f"{node.op_type}: the PTX entry takes {len(params)} parameters, TensorRT passes "
                f"{len(node.input_types)} inputs, {len(launch.extra_args)} scalars, {len(node.output_types)} outputs")
            assert ptx.written_ptx(launch.ptx) == ptx.ptx_for_cuda(CUDA) and ".target sm_90a" in launch.ptx
            assert all(t == trt.PluginArgDataType.INT32 for t in launch.arg_types)
            for t in SIZES:
                check_launch(monkeypatch, node, launch, variant, kernels[variant.stem]["shared_bytes"], t)
                checked += 1
    return checked


@pytest.mark.parametrize(("dtype", "quant"), VARIANTS, ids=[f"{d}-{q or 'float'}" for d, q in VARIANTS])
def test_registrations_under_tensorrts_plugin_layer(trt, kernels, compiled_variants, monkeypatch, dtype, quant):
    nodes = drive(trt, moe_layer(dtype, quant=quant, **MIXTRAL))
    suffix = "Q" if quant else ""
    checked = check_layer(trt, kernels, compiled_variants, monkeypatch, nodes,
                          (f"MoEGemmSwiGLU{suffix}", f"MoEGemmDown{suffix}"), {"int8": 8, "int4": 4}.get(quant))
    print(f"{dtype}/{quant or 'float'}: {checked} (plugin, tactic, T) launches equal the launchers'")
    assert checked == 8 * len(SIZES)


STORED = [(dtype, ordered) for ordered in (False, True) for dtype in ("fp32", "fp16", "bf16")]


@pytest.mark.parametrize(("dtype", "ordered"), STORED, ids=[f"{d}-{'act-order' if o else 'zeros'}" for d, o in STORED])
def test_zero_point_registrations_under_tensorrts_plugin_layer(trt, kernels, compiled_variants, monkeypatch, dtype,
                                                                ordered):
    """A GPTQ / AWQ checkpoint's experts as stored (int4, groups of 128, zero points; act-order: MoEExpertsQZP with
    each expert's input order) at 8x7B sizes: MoEGemmSwiGLUQZ / MoEGemmDownQZ through TensorRT's plugin layer, the
    zero points held as int32 words and the order as int32 [E, H] (ordered) or the [1, 1] placeholder."""
    nodes = drive(trt, moe_layer_stored(dtype, bits=4, group=128, ordered=ordered, **MIXTRAL))
    swiglu = next(n for n in nodes if n.op_type == "MoEGemmSwiGLUQZ")
    assert swiglu.attributes["ordered"] == int(ordered)
    e, h, inter = MIXTRAL["experts"], MIXTRAL["hidden"], MIXTRAL["inter"]
    shapes = [[d.get_constant_value() for d in dims] for dims in swiglu.input_shapes[6:]]
    assert shapes == [[e, 2 * inter, h // 128 * 4 // 32], [e, h] if ordered else [1, 1]], shapes
    checked = check_layer(trt, kernels, compiled_variants, monkeypatch, nodes, ("MoEGemmSwiGLUQZ", "MoEGemmDownQZ"), 4)
    print(f"{dtype}/int4-g128 zeros ordered={ordered}: {checked} (plugin, tactic, T) launches equal the launchers'")
    assert checked == 8 * len(SIZES)


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_f8_registrations_under_tensorrts_plugin_layer(trt, kernels, compiled_variants, monkeypatch, dtype):
    """FP8 e4m3 experts at 8x7B sizes on MoEGemmSwiGLUF8 / MoEGemmDownF8 (the Q kernels with BITS = F8_E4M3):
    through TensorRT's plugin layer, the bytes held as INT32 words (one byte per weight), scales [E, N], every
    launch equal to the launcher's."""
    nodes = drive(trt, moe_layer_f8(dtype, **MIXTRAL))
    e, inter = MIXTRAL["experts"], MIXTRAL["inter"]
    swiglu = next(n for n in nodes if n.op_type == "MoEGemmSwiGLUF8")
    assert set(swiglu.attributes) == {"top_k", "block_size"}, swiglu.attributes
    assert [d.get_constant_value() for d in swiglu.input_shapes[5]] == [e, 2 * inter]
    checked = check_layer(trt, kernels, compiled_variants, monkeypatch, nodes, ("MoEGemmSwiGLUF8", "MoEGemmDownF8"), 8)
    print(f"{dtype}/fp8-e4m3: {checked} (plugin, tactic, T) launches equal the launchers'")
    assert checked == 8 * len(SIZES)


def test_registering_again_is_a_no_op(trt):
    """A second register_plugins() (every build and plan load calls it) neither redefines nor fails."""
    from mixtral_trt.plugins.trt_registry import register_plugins
    from support import tensorrt_standin

    with tensorrt_standin.installed() as (_, plugin):
        register_plugins()
        register_plugins()
        assert sorted(name for name in dir(plugin.op.mixtral) if not name.startswith("_")) == sorted(PLUGINS)


@pytest.mark.parametrize(("profile", "tactic"), [((1, 1, 32), 1), ((1, 64, 512), 1), ((1, 128, 512), 2),
                                                 ((1, 512, 4096), 3)])
def test_gemm_tactic_is_chosen_from_the_profile_not_timed(trt, monkeypatch, profile, tactic):
    """TensorRT times tactics on made-up index data (zeros: every tile returns at once), so each GEMM offers the
    one tactic of its profile's opt T (tiles.tactic_for_tokens) through the real plugin layer's autotune."""
    monkeypatch.setattr(aot, "compile_variant", lambda variant, where=None: aot.Compiled(
        "k", ".version 8.7\n.target sm_90a\n.visible .entry k()\n{\n}\n", None, 4, 0, 87))
    for quant in (None, "int4"):
        nodes = drive(trt, moe_layer("fp16", quant=quant, **MIXTRAL), profile={"T": profile})
        gemms = {n.op_type: n.tactics for n in nodes if "Gemm" in n.op_type}
        assert len(gemms) == 2 and all(t == [tactic] for t in gemms.values()), (profile, gemms)


def test_tactic_policy_and_the_profile_token_count(trt):
    from mixtral_trt.plugins.tiles import tactic_for_tokens
    from mixtral_trt.plugins.trt_common import gemm_tactics, profile_tokens

    assert [tactic_for_tokens(t) for t in (1, 8, 64, 65, 128, 129, 4096)] == [1, 1, 1, 2, 2, 3, 3]
    assert gemm_tactics(None) == [1, 2, 3] and gemm_tactics(300) == [3]
    desc = SimpleNamespace(shape=Shape_of(trt, [-1, 4096], [[1, 4096], [96, 4096], [512, 4096]]))
    assert profile_tokens(desc) == 96
    assert profile_tokens(SimpleNamespace(shape=Shape_of(trt, [7, 4096], None))) == 7  # a static T
    desc = SimpleNamespace(shape=Shape_of(trt, [-1, 4096], None))  # dynamic, no profile known: every tactic is timed
    assert profile_tokens(desc) is None


def Shape_of(trt, dims, bounds):  # noqa: N802  (a tensorrt.plugin Shape over a DynamicPluginTensorDesc)
    from support.trt_plugin_layer import _dynamic_desc

    return trt.plugin.Shape(_dynamic_desc(trt, trt.float16, dims, bounds))


CHECKPOINTS = {  # a checkpoint written by its format's own tools -> (the GEMM plugins its trt lowering takes,
    # act-order field, export dtype, bits of the codes TensorRT holds)
    "gptq-int4-asym-actorder-g128": ("gptq", ("MoEGemmSwiGLUQZ", "MoEGemmDownQZ"), 1, "fp16", 4),
    "awq-int4-g128": ("awq", ("MoEGemmSwiGLUQZ", "MoEGemmDownQZ"), 0, "fp16", 4),
    "ct-fp8-channel": ("fp8", ("MoEGemmSwiGLU", "MoEGemmDown"), None, "fp16", None),  # bf16 scales: exact float
    "ct-fp8-channel-bf16": ("fp8", ("MoEGemmSwiGLUF8", "MoEGemmDownF8"), None, "bf16", 8),  # e4m3 bytes kept
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_quantized_checkpoints_under_tensorrts_plugin_layer(trt, kernels, compiled_variants, monkeypatch, tmp_path,
                                                            name):
    """A GPTQ asymmetric act-order, an AWQ and a compressed-tensors FP8 checkpoint (tests/support/quant_checkpoints.py)
    exported to fp16 and lowered for `trt`, as far as TensorRT's plugin layer goes on CPU: every plugin node of both
    layers through the builder's calls, each launch equal to the launcher's (int4 groups of 128: the default `QZ`
    variants; FP8 exported to bf16: its e4m3 bytes on the F8 GEMMs; to fp16, which does not hold its bf16 scales:
    its exact float dequantization on the float GEMMs)."""
    import onnx_ir as ir

    from mixtral_trt.exporter.build import load_canonical
    from mixtral_trt.exporter.export import export_checkpoint
    from mixtral_trt.exporter.lowering import lower
    from support.quant_checkpoints import QUANT_CFG, write_awq, write_compressed, write_gptq

    kind, gemms, ordered, dtype, bits = CHECKPOINTS[name]
    checkpoint = tmp_path / "ckpt"
    {"gptq": lambda: write_gptq(checkpoint, 4, 128, True, False, "gptq_v2"), "awq": lambda: write_awq(checkpoint, 128),
     "fp8": lambda: write_compressed(checkpoint, "float-quantized", 8, "channel")}[kind]()
    model, _ = load_canonical(export_checkpoint(checkpoint, tmp_path / "onnx", dtype=dtype, max_seq=64, max_batch=2))
    model = lower(model, "trt")
    for node in model.graph:  # the launch checks evaluate at T: the export's token dimension is "batch*seq"
        for value in (*node.inputs, *node.outputs):
            if value is not None and value.shape is not None:
                value.shape = ir.Shape(["T" if str(d) == "batch*seq" else d for d in value.shape])
    nodes = drive(trt, model)
    assert len(nodes) == 8, [n.op_type for n in nodes]
    checked, cfg = 0, QUANT_CFG
    sizes = {"experts": cfg.num_experts, "hidden": cfg.hidden_size, "inter": cfg.intermediate_size}
    for layer in (nodes[:4], nodes[4:]):
        if ordered is not None:
            assert layer[2].attributes["ordered"] == ordered
        checked += check_layer(trt, kernels, compiled_variants, monkeypatch, layer, gemms, bits, sizes)
    print(f"{name}: {checked} (plugin, tactic, T) launches equal the launchers'")
    assert checked == 2 * 8 * len(SIZES)
