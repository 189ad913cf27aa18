"""TensorRT engine build: the `trt`-lowered ONNX -> a serialized plan, with optimization profiles.

Needs TensorRT (>= 10.9, not 11.1/11.2: plugins/trt_registry.py) and, only for a graph with plugin nodes,
the plugin registrations of plugins/ (the backend table's `plugin_nodes`: the dense baseline never touches
them). Written against the documented Python API; on machines without TensorRT `build --backend trt` stops with
a clear message. The profile logic and a whole `trt-dense` build run on CPU with TensorRT-RTX standing in
(tests/exporter/test_trt_build.py); the plugin registrations run under TensorRT's own plugin layer on CPU
(tests/plugins/test_trt_plugin_layer.py).

Two profiles, because the attention-mask length must equal past + seq at every profile point:
  0 decode : seq 1..DECODE_MAX_SEQ,  past 0..max_seq-1
  1 prefill: seq 1..max_prefill,     past 0..max_seq-1
The runtime picks profile 0 when seq <= DECODE_MAX_SEQ and splits longer inputs into chunks of at most
`max_prefill` tokens.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mixtral_trt.common.contract import EXTERNAL_DATA, MODEL_FILE, GraphContract
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import atomic_file
from mixtral_trt.common.progress import step
from mixtral_trt.plugins.aot import build_target, check_aligned_sizes

from .shard.trt import configure_multi_device

if TYPE_CHECKING:
    from rich.progress import Progress

PLAN_FILE = "engine.plan"
DECODE_MAX_SEQ = 8
DEFAULT_TIMING_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mixtral-trt" / "timing.cache"


@dataclass(frozen=True)
class ProfileShape:
    """min / opt / max of the three dynamic sizes; total = past + seq at each point."""

    batch: tuple[int, int, int]
    seq: tuple[int, int, int]
    past: tuple[int, int, int]

    def shapes(self, contract: GraphContract) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> (min, opt, max) shapes."""
        sizes = {"batch": self.batch, "seq": self.seq, "past": self.past,
                 "past + seq": tuple(p + s for p, s in zip(self.past, self.seq, strict=True))}
        return {t.name: tuple(tuple(sizes[d][i] if isinstance(d, str) else d for d in t.shape) for i in range(3))
                for t in contract.inputs}


def profiles_for(contract: GraphContract, max_prefill: int | None = None) -> list[ProfileShape]:
    max_seq, max_batch = contract.max_seq, contract.max_batch
    max_prefill = min(max_prefill or 2048, max_seq)
    if max_prefill < 1:
        raise MixtralTrtError(f"--max-prefill {max_prefill}: must be at least 1")
    opt_past = min(max_seq // 2, 1024)
    decode = ProfileShape(batch=(1, 1, max_batch), seq=(1, 1, min(DECODE_MAX_SEQ, max_seq)),
                          past=(0, opt_past, max_seq - 1))
    prefill = ProfileShape(batch=(1, 1, max_batch), seq=(1, min(512, max_prefill), max_prefill),
                           past=(0, 0, max_seq - 1))
    return [decode, prefill]


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise MixtralTrtError("--backend trt needs TensorRT and a CUDA GPU: pip install 'mixtral-trt[gpu]' "
                              "(tensorrt is not installed here); on a CPU machine use --backend ort, portable "
                              "or plugins-cpu") from None
    return tensorrt


def _network_flags(trt: ModuleType) -> int:
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT >= 10 (11 is strongly typed only; the flag is accepted)
        flags |= 1 << int(strongly_typed)
    return flags


def use_timing_cache(config: Any, path: Path | None) -> tuple[Any, str | None]:
    """(the timing cache set on `config`, or None; what happened to the file, when not used as is). A cache from
    another TensorRT version or GPU is refused by set_timing_cache (ignore_mismatch=False): start a new one."""
    if path is None or not hasattr(config, "create_timing_cache"):
        return None, None
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, None
    note = f"{path}: timing cache refused by this TensorRT (another version or GPU, or corrupt); starting a new one"
    warnings.warn(note, stacklevel=3)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise MixtralTrtError("TensorRT refused an empty timing cache (set_timing_cache returned False)")
    return cache, note


def build_plan(
    onnx_path: Path,
    contract: GraphContract,
    out_dir: Path,
    plugins: bool = False,
    max_prefill: int | None = None,
    timing_cache: Path | None = DEFAULT_TIMING_CACHE,
    workspace_gib: float | None = None,
    debug_outputs: bool = False,
    progress: Progress | None = None,
    trt_module: ModuleType | None = None,
) -> tuple[str, dict[str, Any]]:
    """Parse `onnx_path`, build with the profiles, write PLAN_FILE into out_dir. `plugins`: the graph holds the
    sparse-dispatch plugin nodes (the backend table's `plugin_nodes`), registered with TensorRT first; a graph
    without them never touches the plugin layer.

    Returns (plan file name, backend_info for the manifest). Debug outputs (hidden.*, router_logits.*)
    are unmarked unless `debug_outputs`, so that TensorRT can fuse across them.
    """
    trt = trt_module or import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    kernels = None
    if plugins:
        from mixtral_trt.plugins.trt_registry import register_plugins

        # the AOT kernels' launch contract (per-rank sizes are checked again by each plugin's aot_impl)
        check_aligned_sizes(contract.config.hidden_size, contract.config.intermediate_size, str(onnx_path))
        register_plugins()  # checks the TensorRT version too (AOT plugins; NVIDIA/TensorRT#4849)
        kernels = build_target().describe()  # what aot_impl compiles for: this GPU, PTX for this driver
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    with step(progress, "TensorRT: parse ONNX"):
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise MixtralTrtError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    if not debug_outputs:
        debug = set(contract.names("hidden") + contract.names("router_logits"))
        for i in reversed(range(network.num_outputs)):
            if network.get_output(i).name in debug:
                network.unmark_output(network.get_output(i))
    config = builder.create_builder_config()
    multi_device = contract.extra.get("tensor_parallel")
    if multi_device:  # a rank graph: DistCollective layers over NCCL

        configure_multi_device(trt, network, config, multi_device["world_size"])
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profiles = profiles_for(contract, max_prefill)
    for shape in profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shape.shapes(contract).items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache, cache_note = use_timing_cache(config, timing_cache)
    with step(progress, "TensorRT: build engine (tactic timing)"):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MixtralTrtError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    (out_dir / PLAN_FILE).write_bytes(memoryview(plan))
    if cache is not None:
        with atomic_file(timing_cache, "wb") as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
    info = {
        "tensorrt": trt.__version__,
        "compute_capability": _compute_capability(),
        "profiles": [asdict(p) for p in profiles],
        "decode_max_seq": profiles[0].seq[2],
        "max_tokens_per_call": profiles[1].seq[2],
        "debug_outputs": debug_outputs,
    }
    if kernels is not None:
        info["plugin_kernels"] = kernels  # arch, CUDA driver version, PTX version of the AOT kernels
    if cache_note is not None:
        info["timing_cache"] = cache_note
    return PLAN_FILE, info


def _compute_capability() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return f"{major}.{minor}"
    except Exception:  # no CUDA torch: the manifest records None
        pass
    return None


def build_trt_engine(out_dir: Path, contract: GraphContract, plugins: bool, progress: Progress | None = None,
                     **options: Any) -> tuple[str, dict[str, Any]]:
    """Build the plan from the lowered model saved in out_dir, then drop the ONNX files from out_dir."""
    plan, info = build_plan(out_dir / MODEL_FILE, contract, out_dir, plugins, progress=progress, **options)
    for name in (MODEL_FILE, EXTERNAL_DATA):
        (out_dir / name).unlink(missing_ok=True)
    return plan, info
