"""Parity of an engine with the reference model: logits, per-layer hidden states, router agreement and
greedy decoding, judged against per-dtype tolerances; JSON and a per-layer PNG. `eval_text`: perplexity
and KL divergence on real text, against the reference or a saved reference pass."""

from .eval_report import EvalReport
from .evaluate import eval_text
from .report import LayerParity, ParityReport
from .run import check_engine, run_parity
from .tolerance import TOLERANCES, Tolerance

__all__ = ["TOLERANCES", "EvalReport", "LayerParity", "ParityReport", "Tolerance", "check_engine", "eval_text",
           "run_parity"]
