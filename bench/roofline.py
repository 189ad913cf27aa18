"""The decode roofline: bytes each decode step must read, and a check of every measured decode against
the measured bandwidth.

A roofline that a peer beats is not a roofline. Each implementation's decode implies a read rate
(tok/s x bytes read per step); `check_roofline` compares every one with the measured bandwidth:

- a fraction above 1 is never reported bare. When the bytes that are the same every step (attention,
  LM head, norms, router: everything but the routed experts) fit in the last-level cache, part of each
  step is served from the cache and the fraction may exceed 1: it is kept and that reason is given.
- otherwise the whole step must come from memory, so the measured bandwidth was too low (a noisy
  window): the roofline is raised to that decode's implied rate, and the JSON says so.

H hidden, I intermediate, E experts, k experts per token, V vocab, L layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.quant import QuantScheme


def weight_bytes(scheme: QuantScheme | None, k: int, float_bytes: float = 4, scale_bytes: float = 4) -> float:
    """Bytes per weight of a [N, K] matrix: float, or codes plus one scale per block (per row: per K)."""
    if scheme is None:
        return float_bytes
    return scheme.bits / 8 + scale_bytes / (scheme.block_size or k)


@dataclass(frozen=True)
class StepBytes:
    """What one decode step reads: weights `fixed` every step (attention, LM head, norms, router), the routed
    `experts` (all E for a dense implementation), and the KV `cache` of the context (read by attention)."""

    fixed: float
    experts: float
    cache: float = 0.0

    @property
    def total(self) -> float:
        return self.fixed + self.experts + self.cache

    def to_json(self) -> dict[str, float]:
        return {"fixed": self.fixed, "experts": self.experts, "cache": self.cache, "total": self.total}


def kv_cache_bytes(cfg: MixtralConfig, context: float, value_bytes: float = 4) -> float:
    """Bytes of past keys and values one decode step reads at `context` tokens: 2 x L x kv_size x context
    values (a sliding window caps the context). A Concat cache also writes them again; not counted."""
    if cfg.sliding_window:
        context = min(context, cfg.sliding_window)
    return 2 * cfg.num_layers * cfg.kv_size * context * value_bytes


def step_bytes(cfg: MixtralConfig, experts: float = 4, attention: float = 4, head: float | None = None,
               kv: float | None = None, small: float = 4, all_experts: bool = False) -> StepBytes:
    """Bytes read per decoded token, given the bytes per weight of the experts, the attention projections
    (`kv`: of wk and wv when they differ), the LM head (default: as attention) and the small float tensors
    (norms, router). The embedding table is gathered (one row), unless it is tied to the LM head."""
    h, i, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    kv = attention if kv is None else kv
    head = attention if head is None else head
    attn = n_layers * (2 * h * cfg.q_size * attention + 2 * h * cfg.kv_size * kv)  # wq, wo; wk, wv
    tiny = n_layers * (2 * h + h * cfg.num_experts) + h  # norms, router, final norm
    fixed = attn + cfg.vocab_size * h * head + tiny * small
    n_exp = cfg.num_experts if all_experts else cfg.top_k
    return StepBytes(fixed, n_layers * n_exp * 3 * h * i * experts)


def quantized_step_bytes(cfg: MixtralConfig, scheme: QuantScheme, dense: bool) -> StepBytes:
    """Our quantized engines: experts (and with `dense` attention and LM head) as codes + fp32 scales."""
    q = weight_bytes(scheme, cfg.hidden_size)
    return step_bytes(cfg, experts=q, attention=q if dense else 4)


@dataclass(frozen=True)
class DecodeRead:
    name: str
    tok_s: float
    bytes: StepBytes
    implied_gbs: float
    fraction: float
    cache_resident: bool
    note: str


def check_roofline(bandwidth_gbs: float, decodes: dict[str, tuple[float, StepBytes]],
                   llc_bytes: int | None) -> dict[str, Any]:
    """Every decode against the bandwidth; raise the roofline where a memory-bound decode beat it."""
    rows, roof, raised_by = [], bandwidth_gbs, None
    for name, (tok_s, b) in decodes.items():
        implied = tok_s * b.total / 1e9
        cached = llc_bytes is not None and b.fixed <= llc_bytes
        if implied > roof and not cached:
            roof, raised_by = implied, name
        rows.append((name, tok_s, b, implied, cached))
    out = []
    for name, tok_s, b, implied, cached in rows:
        fraction = implied / roof
        note = ""
        if fraction > 1:
            note = (f"above the roofline because {b.fixed / 1e6:.1f} MB of the {b.total / 1e6:.1f} MB read per "
                    f"step are the same every step and fit in the {llc_bytes / 2**20:.0f} MiB last-level cache: "
                    "part of each step is served from the cache, not memory")
        elif name == raised_by:
            note = (f"this decode read {implied:.1f} GB/s, more than the measured {bandwidth_gbs:.1f} GB/s, and its "
                    f"{b.fixed / 1e6:.0f} MB of fixed weights cannot stay in the cache: the bandwidth measurement "
                    "was disturbed, so the roofline is raised to this figure")
        out.append(DecodeRead(name, tok_s, b, implied, fraction, cached, note))
    return {
        "measured_gbs": bandwidth_gbs,
        "roofline_gbs": roof,
        "raised_by": raised_by,
        "llc_bytes": llc_bytes,
        "decodes": {r.name: {**asdict(r), "bytes": r.bytes.to_json()} for r in out},
    }


def roofline_tok_s(roofline_gbs: float, b: StepBytes) -> float:
    return roofline_gbs * 1e9 / b.total
