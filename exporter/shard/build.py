"""`build` of a tensor-parallel export: one engine per rank, in rank{r}/ of one engine directory.

Each rank graph is lowered for the backend like a single-device graph (the DistCollective nodes pass
through every lowering untouched). TensorRT backends then build rank r's plan (DistCollective layers,
exporter/shard/trt.py); ONNX Runtime backends cut the lowered rank graph at its collectives (cut.py). One
manifest covers the whole directory: the whole model's contract, every rank's files with their sha256,
and `backend_info.tensor_parallel` = {world_size, ranks: [{dir, model_file, program}]}.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixtral_trt.common.backends import Backend
from mixtral_trt.common.contract import MODEL_FILE, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_dir
from mixtral_trt.common.manifest import Manifest
from mixtral_trt.common.progress import step
from mixtral_trt.common.tensor_parallel import KEY, RANK_DIR, TensorParallel

from ..side_files import copy_side_files
from ..trt_build import build_trt_engine
from .collectives import register_schemas
from .cut import PROGRAM_FILE, cut_rank_graph

if TYPE_CHECKING:
    from rich.progress import Progress


def build_sharded_engine(onnx_dir: Path, engine_dir: str | Path, spec: Backend, contract: GraphContract,
                         overwrite: bool = False, progress: Progress | None = None, **trt_options: Any) -> Path:
    """rank{r}/ of `onnx_dir` -> rank{r}/ of `engine_dir`, for every rank, and one manifest.json."""
    import onnx_ir as ir

    from ..lowered import kernel_info, lower_and_save, tool_versions

    tp = TensorParallel.of(contract)
    if not spec.tensor_parallel:
        raise MixtralTrtError(f"--backend {spec.name} does not build tensor-parallel exports ({onnx_dir} has "
                              f"{tp.world_size} ranks); choose one of ort, portable, trt, trt-dense")
    if contract.dtype not in spec.dtypes:
        raise MixtralTrtError(f"--backend {spec.name} builds {'/'.join(spec.dtypes)} exports; {onnx_dir} is "
                              f"{contract.dtype}")
    register_schemas()
    ranks, infos = [], []
    with atomic_dir(engine_dir, overwrite, [onnx_dir]) as tmp:
        for rank in range(tp.world_size):
            src, name = onnx_dir / RANK_DIR.format(rank=rank), RANK_DIR.format(rank=rank)
            rank_contract = GraphContract.load(src)
            if (TensorParallel.of(rank_contract) or tp).rank != rank:
                raise MixtralTrtError(f"{src}: not the graph of rank {rank}")
            try:
                model = ir.load(src / MODEL_FILE)
            except Exception as e:  # protobuf decode errors come in many types
                raise MixtralTrtError(f"{src / MODEL_FILE}: cannot be read as ONNX ({type(e).__name__}: {e})") from None
            dst = tmp / name
            dst.mkdir()
            with step(progress, f"rank {rank} of {tp.world_size}"):
                lower_and_save(model, spec, dst, progress)
            rank_contract.save(dst)
            entry = {"dir": name, "model_file": MODEL_FILE}
            if spec.tensorrt:
                entry["model_file"], info = build_trt_engine(dst, rank_contract, spec.plugin_nodes, progress=progress,
                                                             **trt_options)
                infos.append(info)
            else:
                with step(progress, f"rank {rank}: cut at the collectives"):
                    entry["program"] = cut_rank_graph(dst / MODEL_FILE).name
            ranks.append(entry)
        copy_side_files(onnx_dir, tmp)
        info = {**(infos[0] if infos else {}), **kernel_info(spec.lowering, contract),
                KEY: {"world_size": tp.world_size, "ranks": ranks}}
        with step(progress, "hash artifacts, write manifest.json"):
            Manifest.for_directory(tmp, spec.name, contract, f"{ranks[0]['dir']}/{ranks[0]['model_file']}",
                                   tool_versions(*spec.tools), backend_info=info).save(tmp)
    return Path(engine_dir)


__all__ = ["PROGRAM_FILE", "build_sharded_engine"]
