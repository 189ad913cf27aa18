"""Phase 3: TensorRT's launch contract without TensorRT. The launch file (launches.py) holds what TensorRT's plugin
layer gave on a CPU machine for every plugin variant: kernel entry, PTX (sm_90a, CUDA 13.0), grid, block, shared
memory and scalar arguments at each recorded T. Here:

- each PTX entry takes exactly inputs + scalars + outputs (TensorRT passes nothing else);
- on a GPU the driver loads each PTX (cuModuleLoadData, driver.py) and every recorded launch runs with exactly
  those parameters, arguments in TensorRT's order, outputs pre-filled with NaN, against the references; on a CPU
  stand-in the same launches of the `tiny` layers run the Triton kernels under the interpreter;
- each registration's `aot_impl` runs through a minimal stand-in of `tensorrt.plugin` (trt_standin.py) and
  must give the recorded launch (a mismatch is counted); on a GPU it compiles for this GPU and driver, and
  the target, driver version and PTX version it chose are reported.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from mixtral_trt.plugins import PLUGINS, aot, ptx
from mixtral_trt.plugins.tiles import ALIGN_BLOCK

from . import cases, trt_standin
from .cases import REL_TOL, SHAPES
from .driver import Driver
from .report import Phase

TORCH_TYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32"}
_VERSION = re.compile(r"^\s*\.version\s+\S+", re.M)


def _same_ptx(a: str, b: str) -> bool:
    """Equal up to the `.version` line (which follows the driver the PTX is compiled for)."""
    return _VERSION.sub("", a) == _VERSION.sub("", b)


class Replay:
    """Runs the recorded launches of one layer variant on real tensors and checks each output."""

    def __init__(self, phase: Phase, document: dict[str, Any], device: str, driver=None, label: str = "") -> None:
        self.phase, self.doc, self.device, self.driver, self.label = phase, document, device, driver, label
        self.loaded: dict[str, Any] = {}
        self.mismatches = 0
        self.launches = 0

    def kernel(self, stem: str):
        if stem not in self.loaded:
            k = self.doc["kernels"][stem]
            if self.driver is not None:
                self.loaded[stem] = self.driver.load(k["text"], k["symbol"])
            else:
                module = importlib.import_module(f"mixtral_trt.plugins.{k['folder']}.kernel")
                self.loaded[stem] = getattr(module, k["kernel"])
        return self.loaded[stem]

    def preload(self, stems: list[str], threads: int = 8) -> float:
        """Load the kernels' PTX in parallel threads (the driver compiles each PTX, ~1 s for a GEMM; ctypes releases
        the GIL around the call); returns the seconds it took."""
        import time
        from concurrent.futures import ThreadPoolExecutor

        start = time.perf_counter()
        todo = [s for s in stems if s not in self.loaded]
        with ThreadPoolExecutor(threads) as pool:
            loaded = pool.map(lambda s: self.driver.load(self.doc["kernels"][s]["text"],
                                                         self.doc["kernels"][s]["symbol"]), todo)
            self.loaded.update(zip(todo, loaded, strict=True))
        return time.perf_counter() - start

    def tensors(self, layer: dict[str, Any], t: int) -> dict[str, Any]:
        """The layer's graph inputs at T = t and its expert weights (float, or codes as INT32 elements + scales)."""
        import torch

        shape, dtype = SHAPES[layer["shape"]], layer["dtype"]
        env = {"router_logits": cases.router_logits(t, shape.experts, self.device).to(cases.torch_dtype(dtype)),
               "x": torch.randn(t, shape.hidden, device=self.device, generator=torch.Generator(self.device)
                                .manual_seed(4)).to(cases.torch_dtype(dtype))}
        for node in layer["nodes"]:
            spec = PLUGINS[node["op_type"]]
            shapes = node["launches"][0]["at"][str(t)]["input_shapes"]
            for i, (tensor, value) in enumerate(zip(spec.inputs, node["inputs"], strict=True)):
                if value["name"] in env or not tensor.name.startswith(("w13", "w2")):
                    continue
                if tensor.name in ("w13", "w2"):
                    w13, w2 = cases.float_experts(shape, dtype, self.device)
                    env[value["name"]] = w13 if tensor.name == "w13" else w2
                elif tensor.name.endswith("_codes") and node["op_type"].endswith("F8"):  # FP8 e4m3 bytes
                    e, n, words = shapes[i]
                    codes, scales = cases.random_f8(e, n, 4 * words, dtype, self.device)
                    env[value["name"]] = codes.view(torch.int32)  # what TensorRT holds: the bytes as INT32
                    env[node["inputs"][i + 1]["name"]] = scales
                elif tensor.name.endswith("_codes"):
                    bits, group = node["attributes"]["bits"], node["attributes"]["quant_block"]
                    e, n, words = shapes[i]
                    codes, scales = cases.random_codes(e, n, words * 32 // bits, bits, group, dtype, self.device)
                    env[value["name"]] = codes.view(torch.int32)  # what TensorRT holds: the bytes as INT32
                    env[node["inputs"][i + 1]["name"]] = scales
                elif tensor.name.endswith("_zeros"):  # stored zero points: any byte, as INT32 words
                    g = torch.Generator(device=self.device).manual_seed(3 + i)
                    e, n, words = shapes[i]
                    env[value["name"]] = torch.randint(0, 256, (e, n, 4 * words), generator=g, device=self.device,
                                                       dtype=torch.int32).to(torch.uint8).view(torch.int32)
                elif tensor.name.endswith("_order"):  # each expert's input order (act-order), or the [1, 1] placeholder
                    e, h = shapes[i]
                    g = torch.Generator(device=self.device).manual_seed(5)
                    env[value["name"]] = torch.zeros(e, h, dtype=torch.int32, device=self.device) if not \
                        node["attributes"]["ordered"] else torch.stack(
                            [torch.randperm(h, generator=g, device=self.device) for _ in range(e)]).to(torch.int32)
        return env

    def launch(self, node: dict[str, Any], launch: dict[str, Any], env: dict[str, Any], t: int) -> list[Any]:
        """One recorded launch into NaN-filled outputs; returns the outputs."""
        import torch

        at = launch["at"][str(t)]
        ins = [env[v["name"]] for v in node["inputs"]]
        for v, tensor, want in zip(node["inputs"], ins, at["input_shapes"], strict=True):
            if list(tensor.shape) != want:
                self.mismatches += 1
                self.phase.check(f"{node['op_type']} input {v['name']} shape", str(list(tensor.shape)),
                                 f"recorded {want}", False)
        outs = []
        for o, s in zip(node["outputs"], at["output_shapes"], strict=True):
            dtype = getattr(torch, TORCH_TYPES[o["dtype"]])
            fill = float("nan") if dtype.is_floating_point else cases.FILL_INT
            outs.append(torch.full(s, fill, dtype=dtype, device=self.device))
        kernel = self.kernel(launch["kernel"])
        self.launches += 1
        if self.driver is not None:
            kernel.launch(at["grid"], at["block"], at["shared_mem"], [x.data_ptr() for x in ins], at["scalars"],
                          [y.data_ptr() for y in outs], torch.cuda.current_stream().cuda_stream)
        else:  # the Triton interpreter reads typed tensors: the codes as the bytes they are
            k = self.doc["kernels"][launch["kernel"]]
            typed = [x.view(torch.uint8) if spec.name.endswith(("_codes", "_zeros")) else x
                     for x, spec in zip(ins, PLUGINS[node["op_type"]].inputs, strict=True)]
            kernel[tuple(at["grid"])](*typed, *at["scalars"], *outs, **k["constexprs"],
                                      num_warps=at["block"][0] // 32, num_stages=k["num_stages"])
        return outs

    def run_layer(self, layer: dict[str, Any], t: int) -> None:
        import torch

        shape, dtype = SHAPES[layer["shape"]], layer["dtype"]
        tag = f"{self.label}{layer['shape']} T={t} {dtype} {layer['quant'] or 'float'}"
        env = self.tensors(layer, t)
        router, align, swiglu, down = layer["nodes"]
        weights, experts = self.launch(router, router["launches"][0], env, t)
        ref_w, ref_e = cases.router_reference(env["router_logits"], shape.top_k)
        err = cases.rel_error(weights, ref_w)
        self.phase.check(f"{tag} MoERouter (driver launch)" if self.driver else f"{tag} MoERouter", err,
                         "experts equal, weights rel < 1e-6", bool(torch.equal(experts, ref_e)) and err < 1e-6)
        env.update({router["outputs"][0]["name"]: weights, router["outputs"][1]["name"]: experts})
        routed = self.launch(align, align["launches"][0], env, t)
        ref = cases.align_reference(experts, shape.experts, ALIGN_BLOCK)
        equal = all(torch.equal(a, b) for a, b in zip(routed, ref, strict=True))
        self.phase.check(f"{tag} MoEAlign", int(not equal), "equal to the reference", equal)
        env.update({o["name"]: y for o, y in zip(align["outputs"], routed, strict=True)})
        if self.driver is None and dtype == "bf16":
            self.phase.skip(f"{tag} GEMMs", "the Triton interpreter's bf16 tl.dot is wrong (checked on the GPU)")
            return
        quant = layer["quant"]
        w13_name, w2_name = swiglu["inputs"][4]["name"], down["inputs"][5]["name"]
        if quant == "fp8":  # the F8 GEMMs: e4m3 bytes, a scale per row
            w13 = cases.dequantize_f8(env[w13_name].view(torch.uint8), env[swiglu["inputs"][5]["name"]], dtype)
            w2 = cases.dequantize_f8(env[w2_name].view(torch.uint8), env[down["inputs"][6]["name"]], dtype)
        elif quant:
            bits, stored = swiglu["attributes"]["bits"], len(swiglu["inputs"]) > 6  # the QZ GEMMs: zeros, order
            z13, order = ((env[swiglu["inputs"][6]["name"]].view(torch.uint8), env[swiglu["inputs"][7]["name"]])
                          if stored else (None, None))
            z2 = env[down["inputs"][7]["name"]].view(torch.uint8) if stored else None
            w13 = cases.dequantize(env[w13_name].view(torch.uint8), env[swiglu["inputs"][5]["name"]], bits, dtype, z13,
                                   order if stored and swiglu["attributes"]["ordered"] else None)
            w2 = cases.dequantize(env[w2_name].view(torch.uint8), env[down["inputs"][6]["name"]], bits, dtype, z2)
        else:
            w13, w2 = env[w13_name], env[w2_name]
        ref_inter = cases.swiglu_reference(env["x"], *routed, w13, shape.top_k, ALIGN_BLOCK)
        rows = cases.real_rows(routed[0], routed[2], t * shape.top_k)
        for s_launch, d_launch in zip(swiglu["launches"], down["launches"], strict=True):
            (inter,) = self.launch(swiglu, s_launch, env, t)
            err = cases.rel_error(inter[rows], ref_inter[rows])
            self.phase.check(f"{tag} {swiglu['op_type']} tactic {s_launch['tactic']}", err,
                             f"rel < {REL_TOL[dtype]:g}", err < REL_TOL[dtype])
            env[swiglu["outputs"][0]["name"]] = inter
            (y,) = self.launch(down, d_launch, env, t)
            ref_y = cases.down_reference(inter, *routed, weights, w2, ALIGN_BLOCK)
            err = cases.rel_error(y, ref_y)
            self.phase.check(f"{tag} {down['op_type']} tactic {d_launch['tactic']}", err,
                             f"rel < {REL_TOL[dtype]:g}", err < REL_TOL[dtype])
        self.phase.ran(f"{tag}: {2 + 2 * len(swiglu['launches'])} recorded launches")


def check_entries(phase: Phase, document: dict[str, Any]) -> int:
    """Every launch's PTX entry takes inputs + scalars + outputs, for the recorded target; returns mismatches."""
    bad = 0
    want_version = document["target"]["ptx_version"]
    for layer in document["layers"]:
        for node in layer["nodes"]:
            for launch in node["launches"]:
                k = document["kernels"][launch["kernel"]]
                name, params = ptx.entry_params(k["text"])
                expected = len(node["inputs"]) + len(launch["scalars"]) + len(node["outputs"])
                ok = name == k["symbol"] and len(params) == expected and \
                    f".target {document['target']['arch']}" in k["text"] and \
                    ptx.format_ptx(ptx.written_ptx(k["text"])) == want_version
                bad += not ok
    phase.check("PTX entries take (inputs, scalars, outputs) at the recorded target", bad, "0 mismatches", bad == 0)
    return bad


def check_aot_impl(phase: Phase, document: dict[str, Any], device: str) -> tuple[int, dict[str, Any]]:
    """Each registration's aot_impl through the stand-in against the recorded launches: grid, block, scalar arguments
    and kernel entry must be equal (a mismatch is counted). On a CPU stand-in aot_impl is given the recorded compile
    of the variant it asks for, so shared memory and PTX must be equal too; on a GPU it compiles for this GPU and
    driver with this machine's Triton, whose PTX and shared memory may differ from the recording machine's (counted
    as figures, and its kernels are returned to be launched). Returns (mismatches, {stem: aot_impl's kernel})."""
    defined = trt_standin.define_all()
    by_stem = document["kernels"]
    original = aot.compile_variant
    compiled: dict[str, aot.Compiled] = {}

    def once(variant, where=None):  # each variant compiled once (aot_impl asks again per size and tactic)
        if variant.stem not in compiled:
            compiled[variant.stem] = original(variant, where)
        return compiled[variant.stem]

    def recorded(variant, where=None):
        k = by_stem[variant.stem]
        return aot.Compiled(k["symbol"], k["text"], None, k["num_warps"], k["shared_bytes"], ptx.written_ptx(k["text"]))

    if device == "cuda":
        target = aot.target()
        phase.figure("aot_impl_target", {**target.describe(), "driver_cuda": ptx.driver_cuda_version()})
    else:
        phase.skip("aot_impl compiling for this machine's GPU and driver", "no CUDA device: it was given the recorded "
                   "compile of the variant it asked for; the launches it built were compared")
    aot.compile_variant = once if device == "cuda" else recorded
    bad, compared, same_ptx, same_shared, kernels = 0, 0, 0, 0, {}
    try:
        for layer in document["layers"]:
            for node in layer["nodes"]:
                for launch in node["launches"]:
                    kernel = by_stem[launch["kernel"]]
                    for t, at in launch["at"].items():
                        got = trt_standin.aot_launch(defined, node, at, launch["tactic"])
                        want = {k: at[k] for k in ("grid", "block", "scalars")}
                        same = {k: got[k] for k in want} == want and got["symbol"] == kernel["symbol"]
                        equal_ptx, equal_shared = _same_ptx(got["ptx"], kernel["text"]), \
                            got["shared_mem"] == at["shared_mem"]
                        same_ptx, same_shared = same_ptx + equal_ptx, same_shared + equal_shared
                        if device != "cuda":
                            same = same and equal_ptx and equal_shared
                        kernels[launch["kernel"]] = {**kernel, "text": got["ptx"], "symbol": got["symbol"],
                                                     "shared_bytes": got["shared_mem"]}
                        if not same:
                            bad += 1
                            if bad <= 5:
                                phase.check(f"aot_impl {layer['shape']} {layer['dtype']} {node['op_type']} tactic "
                                            f"{launch['tactic']} T={t}", str(got | {"ptx": "..."}),
                                            f"recorded {want}", False)
                        compared += 1
    finally:
        aot.compile_variant = original
    phase.figure("aot_impl_launches_compared", compared)
    phase.figure("aot_impl_ptx_equal_to_recorded", f"{same_ptx}/{compared} (up to the .version line)")
    phase.figure("aot_impl_shared_mem_equal_to_recorded", f"{same_shared}/{compared}")
    if device == "cuda":
        versions = sorted({ptx.format_ptx(ptx.written_ptx(k["text"])) for k in kernels.values()})
        phase.figure("aot_impl_ptx_versions", versions)
    phase.check("aot_impl (stand-in tensorrt.plugin) vs TensorRT's plugin layer", bad, "0 mismatches", bad == 0)
    return bad, kernels


def unloadable(target: dict[str, Any], driver_version: int) -> str | None:
    """Why this GPU and driver cannot load the recorded PTX, or None."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}{'a' if major >= 9 else ''}"
    cuda = f"{driver_version // 1000}.{driver_version % 1000 // 10}"
    if arch != target["arch"]:
        return f"the launch file's PTX is for {target['arch']}, this GPU is {arch}: record it with --arch {arch}"
    major, minor = (int(v) for v in target["ptx_version"].split("."))
    if ptx.ptx_for_cuda(cuda) < 10 * major + minor:
        return (f"this driver (CUDA {cuda}) loads PTX up to {ptx.format_ptx(ptx.ptx_for_cuda(cuda))}, the launch file "
                f"holds PTX {target['ptx_version']}: record it with --cuda {cuda}")
    return None


def run_phase(phase: Phase, device: str, document: dict[str, Any] | None, why_missing: str | None) -> None:
    import torch

    if document is None:
        phase.skip("the launch contract", why_missing or "no launch file")
        return
    phase.figure("recorded_target", document["target"])
    phase.figure("tensorrt_plugin_layer", document["tensorrt_plugin_layer"])
    mismatches = check_entries(phase, document)
    phase.ran("PTX entries of the launch file")
    driver = None
    if device == "cuda":
        driver = Driver()
        phase.figure("driver_version", driver.version())
    replay = Replay(phase, document, device, driver)
    sizes = document["sizes"] if device == "cuda" else {"tiny": document["sizes"]["tiny"][-1:]}
    why_not = "no CUDA device: the recorded launches of the tiny layers ran the Triton kernels under the interpreter " \
        "instead" if driver is None else unloadable(document["target"], driver.version())
    if why_not:
        phase.skip("driver launches of the recorded PTX (cuModuleLoadData + cuLaunchKernel)", why_not)
        if driver is not None:
            sizes = {}
    elif driver is not None:
        seconds = replay.preload(list(document["kernels"]))
        phase.figure("ptx_loaded_by_driver", {"kernels": len(replay.loaded), "seconds": round(seconds, 1)})
        phase.ran(f"cuModuleLoadData of {len(replay.loaded)} PTX kernels")
    for shape, token_counts in sizes.items():
        for t in token_counts:
            for layer in (x for x in document["layers"] if x["shape"] == shape):
                if phase.out_of_time(f"{shape} T={t} {layer['dtype']} {layer['quant'] or 'float'} launches"):
                    continue
                replay.run_layer(layer, t)
                if device == "cuda":
                    torch.cuda.synchronize()
    mismatches += replay.mismatches
    if phase.budget.left() > 0:
        bad, kernels = check_aot_impl(phase, document, device)
        mismatches += bad
        phase.ran("aot_impl of every registration through the tensorrt.plugin stand-in")
        if driver is not None:  # aot_impl's own PTX, loaded by this driver, launched with its launches
            own = Replay(phase, {**document, "kernels": kernels}, device, driver, label="aot_impl's PTX: ")
            own.preload(list(kernels))
            for layer in (x for x in document["layers"] if x["shape"] == "tiny"):
                t = document["sizes"]["tiny"][-1]
                if not phase.out_of_time(f"aot_impl's kernels, {layer['dtype']} {layer['quant'] or 'float'}"):
                    own.run_layer(layer, t)
            mismatches += own.mismatches
            phase.ran("aot_impl's PTX for this GPU through the driver, tiny layers")
    else:
        phase.skip("aot_impl through the stand-in", "the phase's time budget is spent")
    if driver is not None:
        spills = {stem: k.attribute(3) for stem, k in replay.loaded.items()}
        phase.figure("local_bytes_per_thread", {s: v for s, v in spills.items() if v})
    phase.figure("launches", replay.launches)
    phase.figure("launch_parameter_mismatches", mismatches)
