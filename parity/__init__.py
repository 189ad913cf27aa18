"""Parity of an engine with the reference model: logits, per-layer hidden states, router agreement and
greedy decoding, judged against per-dtype tolerances; JSON and a per-layer PNG."""

from .report import LayerParity, ParityReport
from .run import check_engine, run_parity
from .tolerance import TOLERANCES, Tolerance

__all__ = ["TOLERANCES", "LayerParity", "ParityReport", "Tolerance", "check_engine", "run_parity"]
