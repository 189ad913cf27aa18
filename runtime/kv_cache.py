"""The KV cache carried between engine calls: per layer key and value arrays [B, G, P, D].

The present outputs of one call become the past inputs of the next, so decoding never recomputes the
prefix. The arrays are whatever the backend returned: numpy, ONNX Runtime OrtValues, or CUDA tensors,
passed back untouched. B batch, G kv heads, P cached tokens, D head_dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.dtypes import numpy_dtype


def _shape(array: Any) -> tuple[int, ...]:
    shape = array.shape
    return tuple(shape() if callable(shape) else shape)  # OrtValue.shape is a method


@dataclass
class KVCache:
    keys: list[Any]  # per layer [B, G, P, D]
    values: list[Any]

    @classmethod
    def empty(cls, contract: GraphContract, batch: int) -> KVCache:
        cfg = contract.config
        dtype = numpy_dtype(contract.inputs[-1].dtype)
        shape = (batch, cfg.num_kv_heads, 0, cfg.head_dim)
        return cls([np.zeros(shape, dtype) for _ in range(cfg.num_layers)],
                   [np.zeros(shape, dtype) for _ in range(cfg.num_layers)])

    @property
    def length(self) -> int:
        return _shape(self.keys[0])[2]

    @property
    def batch(self) -> int:
        return _shape(self.keys[0])[0]

    def feeds(self, contract: GraphContract) -> dict[str, np.ndarray]:
        names = zip(contract.names("past_key", "inputs"), contract.names("past_value", "inputs"), strict=True)
        out = {}
        for (kn, vn), k, v in zip(names, self.keys, self.values, strict=True):
            out[kn], out[vn] = k, v
        return out

    @classmethod
    def from_outputs(cls, outputs: dict[str, np.ndarray], contract: GraphContract) -> KVCache:
        return cls([outputs[n] for n in contract.names("present_key")],
                   [outputs[n] for n in contract.names("present_value")])
