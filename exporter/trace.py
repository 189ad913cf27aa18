"""Trace the reference Mixtral, weightless, into an ONNX program; give it its weights; quantize it.

What both the single-device export (export.py) and the tensor-parallel one (shard/export.py) do to a graph.
B batch, T new tokens, P past tokens, G kv heads, D head_dim.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.dtypes import torch_dtype
from mixtral_trt.common.progress import step
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref.model import Mixtral

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.progress import Progress

    from mixtral_trt.common.config import MixtralConfig

WEIGHT_PREFIX = "model."  # initializer name = WEIGHT_PREFIX + Mixtral state_dict key
FOLD_LIMIT = 1 << 16  # constant folding never touches tensors larger than this (elements)


class GraphModule(nn.Module):
    """Mixtral.run with the flat inputs and outputs of the graph contract."""

    def __init__(self, model: Mixtral, debug_outputs: bool = False) -> None:
        super().__init__()
        self.model = model
        self.debug_outputs = debug_outputs

    def forward(self, input_ids, attention_mask, position_ids, past):
        out = self.model.run(input_ids, position_ids, attention_mask, [(k, v) for k, v in past])
        present = [t for kv in out.present for t in kv]
        debug = (*out.hidden_states, *out.router_logits) if self.debug_outputs else ()
        return (out.logits.float(), *present, *debug)


def _sample_inputs(model: Mixtral, batch: int = 2, seq: int = 3, past: int = 4):
    """Tracing inputs; sizes avoid 0 and 1, which torch.export would specialise."""
    cfg, dev = model.config, model.embed.weight.device
    kv = (batch, cfg.num_kv_heads, past, cfg.head_dim)
    return (
        torch.randint(0, cfg.vocab_size, (batch, seq), device=dev),
        torch.ones(batch, past + seq, dtype=torch.int64, device=dev),
        (torch.arange(seq, device=dev) + past).expand(batch, seq),
        [(torch.zeros(kv, dtype=model.dtype, device=dev), torch.zeros(kv, dtype=model.dtype, device=dev))
         for _ in range(cfg.num_layers)],
    )


def _dynamic_shapes(contract: GraphContract) -> dict:
    dim = torch.export.Dim
    # The trace uses batch 2, and a Dim needs min < max: the contract (enforced by the runtime) keeps the
    # user's limit, the traced graph stays valid for any batch.
    batch = dim("batch", min=1, max=max(contract.max_batch, 2))
    seq = dim("seq", min=1, max=contract.max_seq)
    past = dim("past", min=0, max=contract.max_seq)
    kv = {0: batch, 2: past}
    return {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: dim.DYNAMIC},  # = past + seq, which Dim cannot spell
        "position_ids": {0: batch, 1: seq},
        "past": [(kv, kv) for _ in range(contract.config.num_layers)],
    }


def trace_graph(cfg: MixtralConfig, contract: GraphContract, progress: Progress | None = None,
                model: nn.Module | None = None, translations: dict | None = None):
    """Trace a weightless (meta-device) Mixtral into an ONNXProgram that follows `contract`.

    No weight is read or allocated: initializers are named `model.<state_dict key>` and carry no data
    until `attach_weights`. Custom-op function bodies are added; I/O dims are named as in the contract.
    `model` (on the meta device, with `Mixtral.run`'s signature; default `Mixtral(cfg)`) and its extra op
    `translations` serve the tensor-parallel export (exporter/shard).
    """
    import onnx_ir as ir

    from . import ops  # noqa: F401  (registers the ONNX schemas)
    from .ops.functions import ONNX_OPSET, attach_functions
    from .ops.translation import translation_table

    if model is None:
        with torch.device("meta"):
            model = Mixtral(cfg).to(torch_dtype(contract.dtype)).eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with step(progress, "trace and translate to ONNX"), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            GraphModule(model, contract.debug_outputs).eval(),
            _sample_inputs(model),
            dynamo=True,
            custom_translation_table={**translation_table(), **(translations or {})},
            dynamic_shapes=_dynamic_shapes(contract),
            input_names=contract.input_names,
            output_names=contract.output_names,
            opset_version=ONNX_OPSET,
            optimize=False,  # the optimizer would read weights; it runs after attach_weights
            verbose=False,
        )
    graph = program.model.graph
    attach_functions(program.model)
    # Name every I/O dim as the contract does (the exporter invents names for past + seq).
    for values, infos in ((graph.inputs, contract.inputs), (graph.outputs, contract.outputs)):
        for value, info in zip(values, infos, strict=True):
            value.shape = ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in info.shape])
    counts = Counter(f"{n.domain}::{n.op_type}" for n in graph.all_nodes() if n.domain == "mixtral")
    layers = contract.config.num_layers
    if counts != Counter({"mixtral::MoERouter": layers, "mixtral::MoEExperts": layers}):
        raise RuntimeError(f"export produced {dict(counts)}, expected one MoERouter and one MoEExperts per layer")
    return program


def attach_weights(program, weights: Mapping[str, ir.TensorProtocol]) -> None:
    """Give every initializer `model.<key>` the tensor `weights[key]` (same shape and dtype), then optimise.

    The tensors may be lazy or streaming: nothing is read here except the few small constants the
    optimiser folds (size limits keep it away from weight matrices).
    """
    import onnxscript.optimizer

    graph = program.model.graph
    for name, value in graph.initializers.items():
        key = name.removeprefix(WEIGHT_PREFIX)
        if key not in weights:
            raise RuntimeError(f"no weight for initializer {name}")
        tensor = weights[key]
        if tuple(tensor.shape) != tuple(value.shape) or tensor.dtype != value.dtype:
            raise RuntimeError(f"{key}: weight {tuple(tensor.shape)} {tensor.dtype} does not fit "
                               f"initializer {tuple(value.shape)} {value.dtype}")
        value.const_value = tensor
    onnxscript.optimizer.optimize_ir(program.model, num_iterations=2, input_size_limit=FOLD_LIMIT,
                                     output_size_limit=FOLD_LIMIT, inline=False, should_fold=not_on_weights)


def not_on_weights(node) -> bool | None:
    """Never fold a node that reads a weight: weights keep their names and checkpoint layout (refit,
    quantization and debugging find them by name), and streaming export never materialises them."""
    if any(v is not None and v.is_initializer() and v.name.startswith(WEIGHT_PREFIX) for v in node.inputs):
        return False
    return None




def quantize(program, contract: GraphContract, orders: dict | None = None) -> None:
    """Apply the contract's weight-only quantization (contract.extra["quantization"]): the experts, and the
    attention projections and LM head when it says `dense` (`orders`: a quantized checkpoint's act-order input
    orders, quantize_stored)."""
    spec = contract.extra.get("quantization")
    if contract.extra.get("checkpoint_quantization", {}).get("fp8_experts"):  # FP8 e4m3 experts as stored
        from .ops.functions import attach_functions
        from .quantize_f8 import quantize_f8

        quantize_f8(program.model, contract.dtype)
        attach_functions(program.model)
    elif spec and spec.get("source") == "checkpoint":  # a GPTQ / AWQ / compressed-tensors checkpoint's own codes
        from .ops.functions import attach_functions
        from .quantize_stored import quantize_stored

        quantize_stored(program.model, spec, contract.dtype, orders)
        attach_functions(program.model)
    elif spec:
        from .ops.functions import attach_functions
        from .quantize import quantize_experts

        scheme = QuantScheme(spec["bits"], spec["block_size"])
        quantize_experts(program.model, scheme, contract.dtype)
        if spec.get("dense"):
            from .quantize_dense import quantize_linears

            quantize_linears(program.model, scheme, contract.dtype)
        attach_functions(program.model)  # the optimiser dropped the then-unused MoEExpertsQ / LinearQ bodies
