"""`export`: the reference Mixtral (a checkpoint, or a model in memory) -> the canonical ONNX graph.

The graph has one `mixtral::MoERouter` and one `mixtral::MoEExperts` node per layer (with their function
bodies as model-local functions, so ONNX Runtime can run the canonical graph as is), KV-cache I/O with
dynamic batch / seq / past, weights as external data, and `graph.json` (the contract) beside it. The trace,
the weights' binding and the quantization are exporter/trace.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mixtral_trt.chat.tokenizer import tokenizer_file
from mixtral_trt.common.contract import EXTERNAL_DATA, MODEL_FILE, GraphContract
from mixtral_trt.common.dtypes import DTYPES, torch_dtype
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir, check_output
from mixtral_trt.common.progress import bar, step
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.mixtral_ref.checkpoint import input_orders, plan_quantized_checkpoint
from mixtral_trt.mixtral_ref.model import Mixtral

from .side_files import write_export_side_files
from .trace import WEIGHT_PREFIX, attach_weights, quantize, trace_graph

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.progress import Progress


def state_dict_weights(model: Mixtral) -> dict[str, ir.TensorProtocol]:
    """In-memory weights of `model` as onnx_ir tensors (no copy)."""
    from onnx_ir.tensor_adapters import TorchTensor

    return {key: TorchTensor(t.detach(), name=WEIGHT_PREFIX + key) for key, t in model.state_dict().items()}


def save_export(program, out_dir: Path, contract: GraphContract, progress: Progress | None = None) -> Path:
    with step(progress, "save ONNX with external data"):
        program.save(out_dir / MODEL_FILE, external_data=True)
    contract.save(out_dir)
    return out_dir / MODEL_FILE


def with_quantization(contract: GraphContract, name: str | None, block_size: int | None,
                      world_size: int = 1) -> GraphContract:
    """The contract with `extra["quantization"]` set from `--quantize NAME [--quant-block N]`."""
    if name is None:
        return contract
    import dataclasses

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


def _with_checkpoint_quantization(contract: GraphContract, quantized, entries, orders: dict, requested: str | None,
                                  world_size: int) -> GraphContract:
    """The contract of a quantized checkpoint's export: how its weights go out (quantize_stored.plan; `orders`:
    its act-order input orders, mixtral_ref.checkpoint.input_orders)."""
    import dataclasses

    from .quantize_stored import plan

    if requested is not None:
        raise MixtralTrtError(f"--quantize {requested}: the checkpoint is already quantized "
                              f"({quantized.quant.name}); it is exported as it is stored")
    record, spec = plan(quantized, entries, contract.dtype, world_size, orders)
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
    orders = None
    if quantized is not None:
        orders = input_orders(checkpoint)  # the only read of an act-order checkpoint's g_idx
        contract = _with_checkpoint_quantization(contract, quantized, entries, orders, quantize_experts,
                                                 tensor_parallel)
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
        quantize(program, contract, orders)
    with atomic_dir(out_dir, overwrite, [checkpoint]) as tmp, bar(progress, "write weights", len(weights)) as advance:
        ir.save(program.model, tmp / MODEL_FILE, external_data=EXTERNAL_DATA, callback=lambda *_: advance(1))
        contract.save(tmp)
        with step(progress, "tokenizer files (SentencePiece, HF), generation_config.json"):
            write_export_side_files(checkpoint, tmp, max_seq)
    return Path(out_dir)
