"""What one `run_bench` gives: a frozen `BenchResult` (bench.json is its `to_json()`), and the targets the figures
are held to."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class MoeLayer:
    """One MoE layer, sparse dispatch vs dense, at the largest token count asked for (`by_tokens`: all of them)."""

    tokens: int
    sparse_ms: float
    dense_ms: float
    sparse_over_dense: float
    by_tokens: dict[str, dict[str, float]]

    @classmethod
    def of(cls, by_tokens: dict[str, dict[str, float]], tokens: tuple[int, ...]) -> MoeLayer:
        big = by_tokens[str(max(tokens))]
        return cls(max(tokens), big["sparse_ms"], big["dense_ms"], big["sparse_ms"] / big["dense_ms"], by_tokens)


@dataclass(frozen=True)
class BenchResult:
    """One run's figures; `to_json()` is bench.json (fields in its key order)."""

    preset: str
    config: dict[str, Any]
    settings: dict[str, Any]
    decode: dict[str, float]
    decode_runs: dict[str, dict[str, Any]]
    prefill: dict[str, float]
    token_counts: dict[str, dict[str, int]]
    skipped: dict[str, str]
    moe_layer: MoeLayer
    memory_bandwidth_gbs: float
    bandwidth: dict[str, Any]
    roofline: dict[str, Any]
    active_weight_bytes_per_token: float
    kv_cache_bytes_per_step: float
    decode_roofline_tok_s: float
    quantized: dict[str, dict[str, Any]]
    peer: dict[str, Any] | None
    constrained: dict[str, Any] | None
    engine_bytes: dict[str, int | None]
    peak_rss_bytes: int
    targets: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 6's CPU targets (ORT decode >= 2x HF eager and >= 50% of the roofline; sparse <= 0.35x dense),
    issue 12's (the constrained-decoding mask <= 10% of an ort decode step) and issue 15's (fp32 decode >= 70%
    of the roofline and no decode above it without a reason; the peer ratios)."""
    out: dict[str, Any] = {}
    ort_tok_s, hf_tok_s = result["decode"].get("ort"), result["decode"].get("hf_transformers")
    if ort_tok_s and hf_tok_s:
        out["ort_over_hf_decode"] = ort_tok_s / hf_tok_s
        out["ort_decode_2x_hf"] = ort_tok_s >= 2 * hf_tok_s
    if ort_tok_s:
        out["ort_fraction_of_roofline"] = ort_tok_s / result["decode_roofline_tok_s"]
        out["ort_decode_half_roofline"] = out["ort_fraction_of_roofline"] >= 0.5
        out["ort_decode_70pct_roofline"] = out["ort_fraction_of_roofline"] >= 0.7
    decodes = result["roofline"]["decodes"].values()
    out["no_unexplained_decode_above_roofline"] = all(d["fraction"] <= 1 or d["note"] for d in decodes)
    out["moe_sparse_le_035_dense"] = result["moe_layer"]["sparse_over_dense"] <= 0.35
    if result.get("peer"):
        out.update(result["peer"]["targets"])
    if result.get("constrained"):  # issue 12: the grammar mask costs at most 10% of a decode step
        out["constrained_mask_over_decode"] = result["constrained"]["mask_over_decode"]
        out["constrained_mask_le_10pct_decode"] = result["constrained"]["mask_over_decode"] <= 0.10
    return out
