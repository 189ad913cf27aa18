"""`ParityReport`: the figures, the verdict with one-line reasons, JSON, and the per-layer PNG."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .metrics import Flips, GreedyMatch, TensorError
from .report_files import ReportFiles, pyplot, save_figure
from .tolerance import Tolerance


@dataclass(frozen=True)
class LayerParity:
    layer: int
    hidden: TensorError | None  # None: the engine has no debug outputs
    router: TensorError | None
    flips: Flips | None


@dataclass
class ParityReport(ReportFiles):
    backend: str
    dtype: str
    engine: str
    tolerance: Tolerance
    logits: TensorError
    top1: Flips
    layers: list[LayerParity]
    greedy: list[GreedyMatch]
    prompts: list[int]  # prompt lengths
    failures: list[str] = field(default_factory=list)
    quantization: dict | None = None  # quantized engines: scheme and the error against the unquantized model
    kv_cache: dict | None = None  # int8-KV engines: the cache kind and the error against a float-cache reference

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "backend": self.backend,
            "dtype": self.dtype,
            "engine": self.engine,
            "tolerance": asdict(self.tolerance),
            "prompts": self.prompts,
            "logits": {**asdict(self.logits), "top1_agreement": self.top1.agreement,
                       "top1_near_tie_flips": self.top1.near_tie, "top1_unexplained_flips": self.top1.unexplained,
                       "positions": self.top1.positions},
            "layers": [{
                "layer": lp.layer,
                "hidden_max_abs": lp.hidden.max_abs if lp.hidden else None,
                "hidden_rel": lp.hidden.max_rel if lp.hidden else None,
                "router_logits_rel": lp.router.max_rel if lp.router else None,
                "router_flips": lp.flips.unexplained if lp.flips else None,
                "router_near_tie_flips": lp.flips.near_tie if lp.flips else None,
                "tokens": lp.flips.positions if lp.flips else None,
            } for lp in self.layers],
            "greedy": [{**asdict(g), "exact": g.exact} for g in self.greedy],
            "quantization": self.quantization,
            "kv_cache": self.kv_cache,
        }

    def save_plot(self, path: str | Path) -> Path:
        """Per-layer hidden-state relative error (log scale, tolerance line) and router flips per layer."""
        plt = pyplot()
        layers = [lp for lp in self.layers if lp.hidden is not None]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
        verdict = "PASSED" if self.passed else "FAILED"
        fig.suptitle(f"Parity {verdict}: {self.backend} engine ({self.dtype}) vs mixtral_ref (fp32)\n"
                     f"logits rel. error {self.logits.max_rel:.2e}, top-1 agreement {self.top1.agreement:.1%}")
        x = [lp.layer for lp in layers]
        if layers:
            ax1.semilogy(x, [max(lp.hidden.max_rel, 1e-12) for lp in layers], "o-", label="hidden state")
            ax1.semilogy(x, [max(lp.router.max_rel, 1e-12) for lp in layers], "s--", label="router logits")
            ax1.axhline(self.tolerance.hidden_rel, color="red", linestyle=":", label="tolerance")
            near = [lp.flips.near_tie for lp in layers]
            bad = [lp.flips.unexplained for lp in layers]
            ax2.bar(x, near, color="tab:orange", label="near-tie flips (allowed)")
            ax2.bar(x, bad, bottom=near, color="tab:red", label="unexplained flips")
            ax2.set_ylim(0, max(1, max(n + b for n, b in zip(near, bad, strict=True)) * 1.2))
        else:
            ax1.text(0.5, 0.5, "no debug outputs: export --debug-outputs\n(TensorRT: build --debug-outputs too)",
                     ha="center", transform=ax1.transAxes)
        ax1.set_ylabel("max |Δ| / max |ref|")
        ax1.legend(loc="best", fontsize=8)
        ax1.grid(True, which="both", alpha=0.3)
        tokens = layers[0].flips.positions if layers else 0
        ax2.set_ylabel(f"tokens with a different\ntop-k expert set (of {tokens})")
        ax2.set_xlabel("layer")
        ax2.legend(loc="best", fontsize=8)
        ax2.set_xticks(x)
        fig.tight_layout()
        return save_figure(fig, path, 110)
