"""`export`: trace the reference Mixtral into the canonical ONNX graph.

The graph has one `mixtral::MoERouter` and one `mixtral::MoEExperts` node per layer (with their function
bodies as model-local functions, so ONNX Runtime can run the canonical graph as is), KV-cache I/O with
dynamic batch / seq / past, weights as external data, and `graph.json` (the contract) beside it.
B batch, T new tokens, P past tokens, G kv heads, D head_dim.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mixtral_trt.common.contract import EXTERNAL_DATA, MODEL_FILE, GraphContract
from mixtral_trt.common.dtypes import DTYPES, torch_dtype
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir, check_output
from mixtral_trt.common.progress import step
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
                                     output_size_limit=FOLD_LIMIT, inline=False, should_fold=_not_on_weights)


def _not_on_weights(node) -> bool | None:
    """Never fold a node that reads a weight: weights keep their names and checkpoint layout (refit,
    quantization and debugging find them by name), and streaming export never materialises them."""
    if any(v is not None and v.is_initializer() and v.name.startswith(WEIGHT_PREFIX) for v in node.inputs):
        return False
    return None


def state_dict_weights(model: Mixtral) -> dict[str, ir.TensorProtocol]:
    """In-memory weights of `model` as onnx_ir tensors (no copy)."""
    from onnx_ir.tensor_adapters import TorchTensor

    return {key: TorchTensor(t.detach(), name=WEIGHT_PREFIX + key) for key, t in model.state_dict().items()}


def save_export(program, out_dir: Path, contract: GraphContract, progress: Progress | None = None) -> Path:
    with step(progress, "save ONNX with external data"):
        program.save(out_dir / MODEL_FILE, external_data=True)
    contract.save(out_dir)
    return out_dir / MODEL_FILE


def quantize(program, contract: GraphContract) -> None:
    """Apply the contract's weight-only quantization (contract.extra["quantization"]): the experts, and the
    attention projections and LM head when it says `dense`."""
    spec = contract.extra.get("quantization")
    if spec and spec.get("source") == "checkpoint":  # a GPTQ / AWQ / compressed-tensors checkpoint's own codes
        from .ops.functions import attach_functions
        from .quantize_stored import quantize_stored

        quantize_stored(program.model, spec, contract.dtype)
        attach_functions(program.model)
    elif spec:
        from mixtral_trt.common.quant import QuantScheme

        from .ops.functions import attach_functions
        from .quantize import quantize_experts

        scheme = QuantScheme(spec["bits"], spec["block_size"])
        quantize_experts(program.model, scheme, contract.dtype)
        if spec.get("dense"):
            from .quantize_dense import quantize_linears

            quantize_linears(program.model, scheme, contract.dtype)
        attach_functions(program.model)  # the optimiser dropped the then-unused MoEExpertsQ / LinearQ bodies


def with_quantization(contract: GraphContract, name: str | None, block_size: int | None,
                      world_size: int = 1) -> GraphContract:
    """The contract with `extra["quantization"]` set from `--quantize NAME [--quant-block N]`."""
    if name is None:
        return contract
    import dataclasses

    from mixtral_trt.common.quant import QuantScheme

    scheme = QuantScheme.parse(name, block_size)
    # block-wise schemes also quantize the attention projections and the LM head (LinearQ) when the block
    # divides every such linear's inputs (H; wo's q_size, split by heads across `world_size` ranks); a
    # per-channel scheme only the experts (MatMulNBits, the fast kernel for LinearQ, needs a block size)
    cfg = contract.config
    inputs = (cfg.hidden_size, cfg.q_size // world_size)
    dense = bool(scheme.block_size) and all(k % scheme.block_size == 0 for k in inputs)
    extra = {**contract.extra, "quantization": {"scheme": scheme.name, "bits": scheme.bits,
                                                "block_size": scheme.block_size, "dense": dense}}
    return dataclasses.replace(contract, extra=extra)


def _with_checkpoint_quantization(contract: GraphContract, quantized, entries, requested: str | None,
                                  world_size: int) -> GraphContract:
    """The contract of a quantized checkpoint's export: how its weights go out (quantize_stored.plan)."""
    import dataclasses

    from .quantize_stored import plan

    if requested is not None:
        raise MixtralTrtError(f"--quantize {requested}: the checkpoint is already quantized "
                              f"({quantized.quant.name}); it is exported as it is stored")
    record, spec = plan(quantized, entries, contract.dtype, world_size)
    extra = {**contract.extra, "checkpoint_quantization": record}
    if spec is not None:
        extra["quantization"] = spec
    return dataclasses.replace(contract, extra=extra)


def export_model(model: Mixtral, out_dir: str | Path, contract: GraphContract,
                 progress: Progress | None = None) -> Path:
    """Write `model.onnx` (+ external data) and `graph.json` for an in-memory model into an existing dir."""
    if model.dtype != torch_dtype(contract.dtype):
        raise ValueError(f"model dtype {model.dtype} does not match the contract's {contract.dtype}")
    program = trace_graph(model.config, contract, progress)
    attach_weights(program, state_dict_weights(model))
    quantize(program, contract)
    return save_export(program, Path(out_dir), contract, progress)


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    dtype: str = "fp32",
    max_seq: int | None = None,
    max_batch: int = 8,
    overwrite: bool = False,
    progress: Progress | None = None,
    quantize_experts: str | None = None,
    quant_block: int | None = None,
    tensor_parallel: int = 1,
    debug_outputs: bool = False,
) -> Path:
    """Checkpoint directory -> export directory, streaming the weights (atomic: nothing is left behind).

    The graph carries logits and the KV cache; `debug_outputs` adds each layer's residual stream and router
    logits (hidden.{i}, router_logits.{i}), which parity's per-layer report reads. The checkpoint's tokenizer
    is copied and converted to HF files (tokenizer.json, tokenizer_config.json), with generation_config.json.

    `quantize_experts` ("int8" | "int4") stores the expert weights as weight-only integer codes + scales
    (MoEExpertsQ nodes); `quant_block` sets the inputs per scale (0 = per output row). A quantized checkpoint
    (GPTQ / AWQ / compressed-tensors) is exported as stored where the storage format takes it, else as its
    float dequantization (quantize_stored.py); the contract's extra["checkpoint_quantization"] says which.
    `tensor_parallel` N > 1 writes one graph per rank, each with only its share of the weights
    (exporter/shard); 1 is the single-device graph.

    The checkpoint is validated from its headers, the graph is traced without weights, and each
    initializer is copied from the checkpoint into the external data file as it is written, so peak
    memory stays far below the checkpoint size.
    """
    import onnx_ir as ir

    from mixtral_trt.common.progress import bar
    from mixtral_trt.mixtral_ref.checkpoint import plan_quantized_checkpoint
    from mixtral_trt.mixtral_ref.tokenizer import tokenizer_file

    from .side_files import write_export_side_files
    from .streaming import streamed_weights

    if dtype not in DTYPES:
        raise MixtralTrtError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_output(out_dir, [checkpoint], overwrite)  # before the minutes of tracing
    with step(progress, "validate checkpoint (headers)"):
        cfg, entries, where, quantized = plan_quantized_checkpoint(checkpoint)
        tokenizer_file(checkpoint, cfg.vocab_size)  # a bad tokenizer is refused now, not after the trace
    max_seq = max_seq or cfg.max_position_embeddings
    if not 8 <= max_seq <= cfg.max_position_embeddings:
        raise MixtralTrtError(f"--max-seq {max_seq}: must be in [8, {cfg.max_position_embeddings}] "
                              "(max_position_embeddings)")
    if not 1 <= max_batch <= 4096:
        raise MixtralTrtError(f"--max-batch {max_batch}: must be in [1, 4096]")
    contract = with_quantization(GraphContract.for_config(cfg, dtype, max_batch, max_seq, debug_outputs),
                                 quantize_experts, quant_block, tensor_parallel)
    if quantized is not None:
        contract = _with_checkpoint_quantization(contract, quantized, entries, quantize_experts, tensor_parallel)
    if tensor_parallel != 1:
        from .shard.export import streamed_rank_weights, write_ranks

        with atomic_dir(out_dir, overwrite, [checkpoint]) as tmp:
            write_ranks(contract, tensor_parallel,
                        streamed_rank_weights(cfg, entries, where, dtype, tensor_parallel, quantized), tmp, progress)
            with step(progress, "tokenizer files (SentencePiece, HF), generation_config.json"):
                write_export_side_files(checkpoint, tmp, max_seq)
        return Path(out_dir)
    program = trace_graph(cfg, contract, progress)
    weights = streamed_weights(entries, where, torch_dtype(dtype), prefix=WEIGHT_PREFIX, quantized=quantized)
    attach_weights(program, weights)
    with step(progress, f"quantize experts ({quantize_experts})" if quantize_experts else "no quantization"):
        quantize(program, contract)
    with atomic_dir(out_dir, overwrite, [checkpoint]) as tmp, bar(progress, "write weights", len(weights)) as advance:
        ir.save(program.model, tmp / MODEL_FILE, external_data=EXTERNAL_DATA, callback=lambda *_: advance(1))
        contract.save(tmp)
        with step(progress, "tokenizer files (SentencePiece, HF), generation_config.json"):
            write_export_side_files(checkpoint, tmp, max_seq)
    return Path(out_dir)
