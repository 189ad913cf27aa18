"""What produces logits over eval windows: an engine (any backend) or the reference model (fp32 PyTorch).

`score(ids [B, C]) -> (logits [B, C, V] float32, router logits per layer [B, C, E] or None)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixtral_trt import runtime
from mixtral_trt.chat.tokenizer import Tokenizer
from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.mixtral_ref.checkpoint import load_model
from mixtral_trt.mixtral_ref.model import Mixtral
from mixtral_trt.runtime.engine import Engine


def engine_routes(engine: Engine) -> bool:
    """Whether the engine exposes each layer's router logits (exported with --debug-outputs, kept by the build)."""
    return engine.contract.debug_outputs and bool(engine.manifest.backend_info.get("debug_outputs", True))


@dataclass
class EngineScorer:
    engine: Engine

    @property
    def config(self) -> MixtralConfig:
        return self.engine.config

    @property
    def routes(self) -> bool:
        return engine_routes(self.engine)

    @property
    def max_batch(self) -> int:
        return self.engine.max_batch

    @property
    def max_seq(self) -> int:
        return self.engine.max_seq

    def describe(self) -> str:
        return f"engine {self.engine.path} ({self.engine.backend}, {self.engine.dtype})"

    def tokenizer_file(self) -> Path | None:
        return Path(self.engine.tokenizer.path)

    def score(self, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray] | None]:
        roles = ("logits", "router_logits") if self.routes else ("logits",)
        got, _ = self.engine.forward(ids, outputs=roles)
        b, t = ids.shape
        logits = np.asarray(got["logits"], np.float32)  # [B, T, V]
        if not self.routes:
            return logits, None
        names = self.engine.contract.names("router_logits")
        return logits, [np.asarray(got[n], np.float32).reshape(b, t, -1) for n in names]


@dataclass
class ModelScorer:
    model: Mixtral
    source: str = "mixtral_ref"
    tokenizer: Path | None = None

    @property
    def config(self) -> MixtralConfig:
        return self.model.config

    routes = True
    max_batch = 1 << 30
    max_seq = 1 << 30

    def describe(self) -> str:
        return f"checkpoint {self.source} (mixtral_ref, fp32)"

    def tokenizer_file(self) -> Path | None:
        return self.tokenizer

    def score(self, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray] | None]:
        import torch

        b, t = ids.shape
        with torch.inference_mode():
            out = self.model.run(torch.from_numpy(ids))
        return (out.logits.float().numpy(),
                [r.float().reshape(b, t, -1).numpy() for r in out.router_logits])


def open_reference(reference) -> EngineScorer | ModelScorer:
    """A scorer for `reference`: an engine directory (it has manifest.json), a checkpoint directory (loaded in
    fp32), or an already open `Engine` / `Mixtral`."""
    import torch

    if isinstance(reference, Engine):
        return EngineScorer(reference)
    if isinstance(reference, Mixtral):
        return ModelScorer(reference.float().eval())
    path = Path(reference)
    if not path.is_dir():
        raise MixtralTrtError(f"--reference {path}: not a checkpoint or engine directory")
    if (path / "manifest.json").is_file():
        return EngineScorer(runtime.load(path))
    try:
        tokenizer = Path(Tokenizer.from_checkpoint(path).path)
    except MixtralTrtError:
        tokenizer = None
    return ModelScorer(load_model(path, dtype=torch.float32), str(path), tokenizer)
