"""The launch file: what TensorRT's plugin layer gives for each plugin variant, recorded on a CPU machine
(`make device-check-launches`: tests/support/launch_record.py, TensorRT's own `tensorrt.plugin` over the CPU
stand-in) and replayed through the CUDA driver by phase 3 (contract.py).

    DIR/launches.json  {"format": LAUNCHES_FORMAT, "target": {arch, cuda, ptx_version}, "tensorrt_plugin_layer",
                        "shapes": {name: {experts, top_k, hidden, inter}}, "sizes": {shape: [T, ...]},
                        "kernels": {stem: {KernelVariant fields, "symbol", "ptx": "ptx/<stem>.ptx", "ptx_sha256"}},
                        "layers": [{"shape", "dtype", "quant", "nodes": [{"op_type", "attributes",
                                    "inputs": [{"name", "dtype"}], "outputs": [...], "launches": [{"tactic",
                                    "kernel": stem, "scalars": [expression, ...], "at": {"T": {"grid", "block",
                                    "shared_mem", "scalars", "input_shapes", "output_shapes"}}}]}]}]}
    DIR/ptx/<stem>.ptx
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError

LAUNCHES_FORMAT = "mixtral-trt.launches/1"
RECORDED_T = {"mixtral-8x7b": [1, 8, 512, 4096], "tiny": [1, 8, 37]}  # token counts each launch is evaluated at
DEFAULT_DIR = "device-check-launches"


def load(directory: str | Path) -> dict[str, Any]:
    """The launch file with each kernel's PTX text (key "text"), checked against its recorded sha256."""
    directory = Path(directory)
    path = directory / "launches.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MixtralTrtError(f"{path}: cannot read the launch file ({e}); make device-check-launches writes it") \
            from None
    if document.get("format") != LAUNCHES_FORMAT:
        raise MixtralTrtError(f"{path}: format {document.get('format')!r}, expected {LAUNCHES_FORMAT!r}")
    for stem, kernel in document["kernels"].items():
        text = (directory / kernel["ptx"]).read_text()
        if hashlib.sha256(text.encode()).hexdigest() != kernel["ptx_sha256"]:
            raise MixtralTrtError(f"{directory / kernel['ptx']}: its sha256 differs from launches.json's ({stem})")
        kernel["text"] = text
    return document
