"""Record what TensorRT's plugin layer gives for each plugin variant (support/trt_plugin_layer.drive over the
stand-in of support/tensorrt_standin.py) into a launch file the device check replays on a GPU without TensorRT
(bench/device_check/launches.py reads it; `make device-check-launches` / tools/record_launches.py write it).

    OUT/launches.json   the format of bench/device_check/launches.py (LAUNCHES_FORMAT)
    OUT/ptx/<stem>.ptx  each kernel variant's PTX as aot_impl returned it (sm_90a, for a CUDA 13.0 driver)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixtral_trt.bench.device_check.cases import SHAPES
from mixtral_trt.bench.device_check.launches import LAUNCHES_FORMAT, RECORDED_T
from mixtral_trt.common.fileio import atomic_dir
from mixtral_trt.plugins import aot
from support import tensorrt_standin
from support.moe_layer_graph import moe_layer, moe_layer_f8, moe_layer_stored
from support.trt_plugin_layer import drive

# "int4-zeros" / "int4-act-order": a quantized checkpoint's experts as stored (MoEExpertsQZ / MoEExpertsQZP), int4
# in groups of 128 (the default QZ variants), of 32 where the shape's sizes are not multiples of 128 (tiny);
# "fp8": FP8 e4m3 experts on the F8 GEMMs (support/moe_layer_graph.py moe_layer_f8)
STORED = ("int4-zeros", "int4-act-order")
LAYERS = [(shape, dtype, quant) for shape in RECORDED_T for quant in (None, "int8", "int4", *STORED, "fp8")
          for dtype in ("fp32", "fp16", "bf16")]


def stored_group(shape) -> int:
    return 128 if shape.hidden % 128 == 0 and shape.inter % 128 == 0 else 32


def layer_model(shape, dtype: str, quant: str | None):
    if quant in STORED:
        return moe_layer_stored(dtype, shape.experts, shape.top_k, shape.hidden, shape.inter, 4, stored_group(shape),
                                quant == "int4-act-order")
    if quant == "fp8":
        return moe_layer_f8(dtype, shape.experts, shape.top_k, shape.hidden, shape.inter)
    return moe_layer(dtype, shape.experts, shape.top_k, shape.hidden, shape.inter, quant=quant)


def _register():
    from mixtral_trt.plugins.trt_registry import register_plugins

    with tensorrt_standin.installed() as (module, _):
        register_plugins()
    return module


def record(out: str | Path, arch: str = "sm_90a", cuda: str = "13.0",
           compile_fn: Callable[[aot.KernelVariant, aot.Target], aot.Compiled] | None = None,
           layers: list[tuple[str, str, str | None]] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Drive every layer variant through TensorRT's plugin layer; write the launch file and the PTX; returns the
    launch file. `compile_fn(variant, target)`: default aot.compile_variant (a real compile)."""
    where = aot.target(arch, cuda)
    compile_fn = compile_fn or aot.compile_variant
    by_ptx: dict[str, aot.KernelVariant] = {}
    original = aot.compile_variant

    def compile_for_target(variant, _where=None):  # aot_impl compiles for the build GPU; here: for `where`
        compiled = compile_fn(variant, where)
        by_ptx[compiled.ptx] = variant
        return compiled

    trt = _register()
    kernels: dict[str, dict[str, Any]] = {}
    recorded = []
    aot.compile_variant = compile_for_target
    try:
        for shape_name, dtype, quant in layers or LAYERS:
            shape = SHAPES[shape_name]
            model = layer_model(shape, dtype, quant)
            graph_nodes = [n for n in model.graph if n.domain == "trt.plugins"]
            nodes = []
            for gnode, node in zip(graph_nodes, drive(trt, model), strict=True):
                launches = []
                for launch in node.launches:
                    variant = by_ptx[launch.ptx]
                    kernels.setdefault(variant.stem, {
                        **asdict(variant), "symbol": launch.kernel_name, "ptx": f"ptx/{variant.stem}.ptx",
                        "shared_bytes": launch.shared_mem.get_constant_value(),
                        "ptx_sha256": hashlib.sha256(launch.ptx.encode()).hexdigest(), "text": launch.ptx})
                    at = {}
                    for t in RECORDED_T[shape_name]:
                        sizes = {"T": t}
                        values = launch.at(sizes)
                        at[str(t)] = {"grid": list(values["grid"]), "block": list(values["block"]),
                                      "shared_mem": values["shared_mem"], "scalars": list(values["extra_args"]),
                                      "input_shapes": [[d.evaluate(sizes) for d in s] for s in node.input_shapes],
                                      "output_shapes": [[d.evaluate(sizes) for d in s] for s in node.output_shapes]}
                    launches.append({"tactic": launch.tactic, "kernel": variant.stem,
                                     "scalars": [str(e) for e in launch.extra_args], "at": at})
                nodes.append({"op_type": node.op_type, "attributes": node.attributes,
                              "inputs": [{"name": v.name, "dtype": t.name} for v, t in
                                         zip(gnode.inputs, node.input_types, strict=True)],
                              "outputs": [{"name": v.name, "dtype": t.name} for v, t in
                                          zip(gnode.outputs, node.output_types, strict=True)],
                              "launches": launches})
            recorded.append({"shape": shape_name, "dtype": dtype, "quant": quant, "nodes": nodes})
    finally:
        aot.compile_variant = original
    document = {"format": LAUNCHES_FORMAT, "target": where.describe(), "tensorrt_plugin_layer": trt.__version__,
                "shapes": {name: vars(SHAPES[name]) for name in RECORDED_T}, "sizes": RECORDED_T,
                "kernels": {stem: {k: v for k, v in k_.items() if k != "text"} for stem, k_ in kernels.items()},
                "layers": recorded}
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "ptx").mkdir()
        for stem, k in kernels.items():
            (tmp / "ptx" / f"{stem}.ptx").write_text(k["text"])
        (tmp / "launches.json").write_text(json.dumps(document, indent=1) + "\n")
    return document
