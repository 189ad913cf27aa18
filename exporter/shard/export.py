"""Tensor-parallel export: trace one rank graph, then write every rank's weights and contract.

The rank graphs differ only in their weights (the vocabulary offset is a weight too), so the graph is
traced once, on the meta device, optimised only where no weight is read, quantized once; each rank then
binds its share of the weights to the same initializers and is saved into `rank{r}/` with its own
external data. The export directory:

    graph.json            the whole model's contract (full kv heads): what the runtime's Engine speaks,
                          extra.tensor_parallel = world size and the collectives
    rank{r}/model.onnx    rank r's graph (its heads, expert rows, vocabulary rows; DistCollective nodes)
    rank{r}/model.onnx.data
    rank{r}/graph.json    rank r's contract (its kv heads), extra.tensor_parallel.rank = r
    tokenizer files
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mixtral_trt.common.contract import EXTERNAL_DATA, MODEL_FILE, GraphContract
from mixtral_trt.common.dtypes import DTYPES, torch_dtype
from mixtral_trt.common.progress import bar, step
from mixtral_trt.common.quant import QuantScheme
from mixtral_trt.common.tensor_parallel import KEY, RANK_DIR, TensorParallel, check_world_size

from ..quantize import quantized_tensors
from ..quantize_dense import quantized_linear_tensors
from ..streaming import streamed_weights
from ..trace import FOLD_LIMIT, WEIGHT_PREFIX, not_on_weights, quantize, trace_graph
from . import collectives
from .model import RankMixtral, collective_joins
from .weights import shard_state_dict, streamed_shard_weights

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.progress import Progress

    from mixtral_trt.common.config import MixtralConfig
    from mixtral_trt.mixtral_ref.model import Mixtral

RankWeights = Callable[[int], Mapping[str, "ir.TensorProtocol"]]  # rank -> RankMixtral state-dict key -> tensor


def with_tensor_parallel(contract: GraphContract, tp: TensorParallel) -> GraphContract:
    return dataclasses.replace(contract, extra={**contract.extra, KEY: tp.to_dict()})


def rank_contract(contract: GraphContract, tp: TensorParallel) -> GraphContract:
    """The I/O of a rank graph (the rank's kv heads); `config` stays the whole model's."""
    local = GraphContract.for_config(tp.local_config(contract.config), contract.dtype, contract.max_batch,
                                     contract.max_seq, contract.debug_outputs)
    return with_tensor_parallel(dataclasses.replace(local, config=contract.config, extra=contract.extra), tp)


def quant_block(contract: GraphContract) -> int | None:
    spec = contract.extra.get("quantization")
    return None if spec is None else spec["block_size"]


def trace_rank_graph(contract: GraphContract, world_size: int, progress: Progress | None = None):
    """(ONNXProgram of a rank graph with its DistCollective nodes, the TensorParallel record)."""
    cfg = contract.config
    tp = TensorParallel(world_size)
    with torch.device("meta"):
        model = RankMixtral(cfg, tp).to(torch_dtype(contract.dtype)).eval()
    program = trace_graph(cfg, rank_contract(contract, tp), progress, model=model,
                          translations=collectives.translation_table())
    collectives.to_dist_collective(program.model, collective_joins(cfg.num_layers))
    return program, tp


def rank_safe_optimize(model: ir.Model) -> None:
    """Fold what does not read a weight, drop dead nodes: the graph stays valid for every rank's weights.

    (The single-device optimiser also merges equal small initializers and rewrites by constant values,
    which would tie the graph to rank 0's weights, e.g. its vocabulary offset 0. `build` optimises each
    rank's graph with its own weights.)"""
    import onnxscript.optimizer

    for _ in range(2):
        onnxscript.optimizer.fold_constants_ir(model, onnx_shape_inference=True, input_size_limit=FOLD_LIMIT,
                                               output_size_limit=FOLD_LIMIT, should_fold=not_on_weights)
        onnxscript.optimizer.remove_unused_nodes(model)


def rebind_weights(model: ir.Model, weights: Mapping[str, ir.TensorProtocol], contract: GraphContract) -> None:
    """Give every weight initializer of the rank graph (quantized or not) one rank's tensor."""
    spec = contract.extra.get("quantization")
    graph = model.graph
    for name, value in list(graph.initializers.items()):
        if not name.startswith(WEIGHT_PREFIX):
            continue
        key = name.removeprefix(WEIGHT_PREFIX)
        if key in weights:
            tensor = weights[key]
        elif spec and name.endswith((".codes", ".scales")):
            base = name.rsplit(".", 1)[0]
            source = weights[base.removeprefix(WEIGHT_PREFIX)]
            quantized = quantized_tensors if len(source.shape) == 3 else quantized_linear_tensors  # experts / LinearQ
            codes, scales = quantized(source, QuantScheme(spec["bits"], spec["block_size"]), DTYPES[contract.dtype],
                                      base)
            tensor = codes if name.endswith(".codes") else scales
        else:
            raise RuntimeError(f"no weight for initializer {name}")
        if tuple(tensor.shape) != tuple(value.shape) or tensor.dtype != value.dtype:
            raise RuntimeError(f"{name}: weight {tuple(tensor.shape)} {tensor.dtype} does not fit "
                               f"initializer {tuple(value.shape)} {value.dtype}")
        value.const_value = tensor


def write_ranks(contract: GraphContract, world_size: int, rank_weights: RankWeights, out_dir: Path,
                progress: Progress | None = None) -> TensorParallel:
    """Trace once, then write rank{r}/ for every rank and the whole model's graph.json into `out_dir`."""
    import onnx_ir as ir

    check_world_size(contract.config, world_size, quant_block(contract))
    program, tp = trace_rank_graph(contract, world_size, progress)
    for rank in range(world_size):
        weights = rank_weights(rank)
        rebind_weights(program.model, weights, contract)
        if rank == 0:
            rank_safe_optimize(program.model)
            tp = TensorParallel(world_size, None, tp.moe, collectives.collectives_of(program.model))
            with step(progress, "quantize experts" if contract.extra.get("quantization") else "no quantization"):
                quantize(program, contract)
        rank_dir = out_dir / RANK_DIR.format(rank=rank)
        rank_dir.mkdir()
        count = len(program.model.graph.initializers)
        with bar(progress, f"write rank {rank} of {world_size}", count) as advance:
            ir.save(program.model, rank_dir / MODEL_FILE, external_data=EXTERNAL_DATA, callback=lambda *_: advance(1))
        rank_contract(contract, tp.for_rank(rank)).save(rank_dir)
    with_tensor_parallel(contract, tp).save(out_dir)
    return tp


def export_model_tensor_parallel(model: Mixtral, out_dir: str | Path, contract: GraphContract, world_size: int,
                                 progress: Progress | None = None) -> Path:
    """An in-memory model -> rank{r}/ + graph.json in the existing directory `out_dir` (tests, small models)."""
    from onnx_ir.tensor_adapters import TorchTensor

    state = {k: t.detach() for k, t in model.state_dict().items()}
    tp = TensorParallel(world_size)

    def rank_weights(rank: int):
        shard = shard_state_dict(state, contract.config, tp, rank)
        return {k: TorchTensor(t, name=WEIGHT_PREFIX + k) for k, t in shard.items()}

    write_ranks(contract, world_size, rank_weights, Path(out_dir), progress)
    return Path(out_dir)


def streamed_rank_weights(cfg: MixtralConfig, entries, where, dtype: str, world_size: int,
                          quantized=None) -> RankWeights:
    """rank -> that rank's cut of every checkpoint tensor, streamed (weights.ShardTensor); a quantized
    checkpoint's linears (`quantized`) dequantized by their format."""

    sources = streamed_weights(entries, where, torch_dtype(dtype), prefix=WEIGHT_PREFIX, quantized=quantized)
    tp = TensorParallel(world_size)
    return lambda rank: streamed_shard_weights(sources, cfg, tp, rank, prefix=WEIGHT_PREFIX)
