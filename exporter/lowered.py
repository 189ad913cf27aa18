"""What every engine build does to a canonical graph, one device or one rank: lower it for the backend and
save it; what its manifest records of the kernels and of the tools.

Shared by build.py and shard/build.py.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

from mixtral_trt.common.backends import Backend
from mixtral_trt.common.contract import EXTERNAL_DATA, MODEL_FILE, GraphContract
from mixtral_trt.common.progress import step

from .lowering import lower

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.progress import Progress


def tool_versions(*packages: str) -> dict[str, str]:
    names = ("mixtral-trt", "torch", "onnx", "onnx-ir", "onnxscript", "onnxruntime", *packages)
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions



def lower_and_save(model: ir.Model, backend: Backend, out_dir: Path, progress: Progress | None = None,
                   contract: GraphContract | None = None, kv_cache: str = "float", ragged: bool = False,
                   **options) -> Path:
    """Apply the backend's lowering (and the GroupQueryAttention one for its `attention="gqa"`, the int8 KV cache
    one for `kv_cache="int8"`, ragged attention for `ragged`: with our CPU kernels' RaggedAttention where
    lowering/ragged_attention.py's `refusal` allows), fold constants, and save model.onnx + external data
    into out_dir. `options` go to the lowering beside the backend's own."""
    import onnx_ir as ir
    import onnxscript.optimizer

    with step(progress, f"lower for {backend.name} ({backend.lowering})"):
        model = lower(model, backend.lowering, **backend.lowering_options, **options)
    if backend.attention == "gqa":
        from .lowering.gqa import lower_attention

        if contract is None:
            raise ValueError("the GroupQueryAttention lowering needs the graph contract")
        with step(progress, "lower attention to GroupQueryAttention"):
            model = lower_attention(model, contract)
    if kv_cache == "int8":
        from .lowering.kv_int8 import lower_kv_int8

        if contract is None:
            raise ValueError("the int8 KV cache lowering needs the graph contract")
        with step(progress, "store the KV cache as int8 codes + per-token scales"):
            model = lower_kv_int8(model, contract)
    if ragged:
        from .lowering.ragged import expose_visibility
        from .lowering.ragged_attention import lower_ragged_attention, refusal

        with step(progress, "ragged attention: each query's visible keys as an input"):
            model = expose_visibility(model)
        if refusal(kv_cache, options.get("cpu_kernels") == "ours") is None:
            if contract is None:
                raise ValueError("the RaggedAttention lowering needs the graph contract")
            with step(progress, "ragged attention on our CPU kernels (RaggedAttention)"):
                model = lower_ragged_attention(model, contract)
    with step(progress, "optimize (constant folding, dead code)"):
        onnxscript.optimizer.optimize_ir(model, num_iterations=2)
    if backend.lowering == "ort":  # after the optimizer, which would only warn that it keeps the input's default
        from .lowering.logits_to_keep import expose_logits_to_keep

        model = expose_logits_to_keep(model)
    with step(progress, "save lowered model"):
        ir.save(model, out_dir / MODEL_FILE, external_data=EXTERNAL_DATA)
    return out_dir / MODEL_FILE


def kernel_info(lowering: str, contract) -> dict:
    """What the manifest says about the engine's kernels beyond its dtype: whether the `ort` lowering's
    quantized kernels round activations to int8 (then parity's reference does the same)."""
    spec = contract.extra.get("quantization")
    if lowering != "ort" or not spec:
        return {}
    from .lowering.ort_quant import activations_block

    block = activations_block(spec["bits"], spec["block_size"])
    return {"int8_activations_block": block} if block else {}
