"""TensorRT build settings for a rank graph (written against the documented API; needs a GPU to run).

- TensorRT 10.16 builds engines with multi-device layers only with the preview feature
  `MULTIDEVICE_RUNTIME_10_16` (NvInfer.h, PreviewFeature); TensorRT 11 has multi-device GA and no such flag.
- Every IDistCollectiveLayer must know the number of ranks (`ILayer.num_ranks`); the ONNX parser reads the
  node's `nb_rank`, and this sets it on any layer that came out with 1 (parsers that read only `group_size`).
- DistCollective needs SM80 or newer and NCCL >= 2.19 at run time; the runtime hands each rank's execution
  context its NCCL communicator (runtime/distributed/rank_trt.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError

PREVIEW_FLAG = "MULTIDEVICE_RUNTIME_10_16"


def configure_multi_device(trt: ModuleType, network: Any, config: Any, world_size: int) -> int:
    """Enable multi-device building and set num_ranks on the collective layers; returns how many there are."""
    preview = getattr(getattr(trt, "PreviewFeature", None), PREVIEW_FLAG, None)
    if preview is not None:  # TensorRT 10.16.x
        config.set_preview_feature(preview, True)
    dist_type = getattr(getattr(trt, "LayerType", None), "DIST_COLLECTIVE", None)
    if dist_type is None:
        raise MixtralTrtError(f"TensorRT {getattr(trt, '__version__', '?')} has no DistCollective layer: "
                              "tensor-parallel engines need TensorRT >= 10.16")
    found = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == dist_type:
            found += 1
            if layer.num_ranks != world_size:
                layer.num_ranks = world_size
    if not found:
        raise MixtralTrtError("the rank graph parsed without DistCollective layers: this TensorRT's ONNX parser "
                              "does not import them (TensorRT >= 10.16 does)")
    return found
