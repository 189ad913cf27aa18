"""mixtral_trt.mixtral_ref: the reference Mixtral, its checkpoints and presets (MixtralConfig and the errors are
re-exported from mixtral_trt.common, Tokenizer from mixtral_trt.chat).

Names are imported on first use, so `import mixtral_trt.mixtral_ref` stays light (no transformers,
onnx or sentencepiece).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MixtralConfig": "mixtral_trt.common.config",
    "PRESETS": ".presets",
    "get_preset": ".presets",
    "Mixtral": ".model",
    "load_model": ".checkpoint",
    "load_state_dict": ".checkpoint",
    "inspect_checkpoint": ".checkpoint",
    "save_checkpoint": ".writer",
    "init_random": ".writer",
    "Tokenizer": "mixtral_trt.chat.tokenizer",  # kept here for older callers; its home is chat
    "MixtralTrtError": "mixtral_trt.common.errors",
    "CheckpointError": "mixtral_trt.common.errors",
    "ConfigError": "mixtral_trt.common.errors",
}
__all__ = [  # noqa: RUF022  (same order as _EXPORTS)
    "MixtralConfig",
    "PRESETS",
    "get_preset",
    "Mixtral",
    "load_model",
    "load_state_dict",
    "inspect_checkpoint",
    "save_checkpoint",
    "init_random",
    "Tokenizer",
    "MixtralTrtError",
    "CheckpointError",
    "ConfigError",
]

if TYPE_CHECKING:
    from mixtral_trt.chat.tokenizer import Tokenizer
    from mixtral_trt.common.config import MixtralConfig
    from mixtral_trt.common.errors import CheckpointError, ConfigError, MixtralTrtError

    from .checkpoint import inspect_checkpoint, load_model, load_state_dict
    from .model import Mixtral
    from .presets import PRESETS, get_preset
    from .writer import init_random, save_checkpoint


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
