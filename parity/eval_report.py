"""`EvalReport`: the figures of one `eval_text`, as JSON and a PNG (KL distribution, router flips per layer,
expert load per layer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixtral_trt.mixtral_ref.quantized import scheme_of

from .divergence import Accumulator
from .reference_file import LEVELS, ReferenceHeader
from .report_files import ReportFiles, pyplot, save_figure
from .windows import WindowPlan


@dataclass
class EvalReport(ReportFiles):
    engine: str
    backend: str
    dtype: str  # activations; quantized weights in `weights`
    weights: str | None  # "int8" / "int4" for an export --quantize, None for float weights
    reference: str | None  # what made the reference side; None: perplexity only
    text: str
    text_sha256: str
    text_tokens: int
    ctx: int
    stride: int
    windows: int
    summary: dict  # tokens, perplexity [, reference_perplexity, kl{mean,median,p90,p99,max}, top1_agreement, ...]
    router_flip_rate: list[float] | None  # per layer; None: no routing on one side
    expert_load: list[list[int]] | None  # engine, [L][E] tokens routed to each expert
    reference_expert_load: list[list[int]] | None
    kl_values: np.ndarray  # [scored] per token (for the plot; not in the JSON)
    reference_logits: str | None = None  # the file read instead of a reference pass
    saved_reference: str | None = None

    @classmethod
    def build(cls, engine, header: ReferenceHeader, plan: WindowPlan, text: str, acc: Accumulator,
              reference_logits, saved) -> EvalReport:
        flips = None
        if acc.flips is not None and acc.routed_tokens:
            flips = (acc.flips / acc.routed_tokens).tolist()
        return cls(
            str(engine.path), engine.backend, engine.dtype, _weights(engine), header.reference or None, text,
            header.text_sha256, header.text_tokens, plan.ctx, plan.stride, len(plan.windows), acc.summary(), flips,
            None if acc.load_engine is None else acc.load_engine.tolist(),
            None if acc.load_reference is None else acc.load_reference.tolist(),
            acc.kl_values, str(reference_logits) if reference_logits else None, str(saved) if saved else None)

    @property
    def kind(self) -> str:
        """"fp32", or "fp32, int4 weights"."""
        return self.dtype + (f", {self.weights} weights" if self.weights else "")

    @property
    def kl(self) -> dict | None:
        return self.summary.get("kl")

    def to_dict(self) -> dict:
        return {
            "engine": self.engine, "backend": self.backend, "dtype": self.dtype, "weights": self.weights,
            "reference": self.reference, "reference_logits": self.reference_logits,
            "saved_reference": self.saved_reference,
            "reference_storage": {"log_probs": f"uint16, {LEVELS} steps of each token's range",
                                  "exact": ["target log-prob", "top-1 token and probability", "expert sets"]},
            "text": {"source": self.text, "sha256": self.text_sha256, "tokens": self.text_tokens},
            "ctx": self.ctx, "stride": self.stride, "windows": self.windows,
            **self.summary,
            "layers": [{
                "layer": i,
                "router_flip_rate": self.router_flip_rate[i] if self.router_flip_rate else None,
                "expert_load": self.expert_load[i] if self.expert_load else None,
                "reference_expert_load": self.reference_expert_load[i] if self.reference_expert_load else None,
            } for i in range(self._layers)],
        }

    @property
    def _layers(self) -> int:
        return len(next((x for x in (self.expert_load, self.reference_expert_load, self.router_flip_rate) if x),
                        []))

    def save_plot(self, path: str | Path) -> Path:
        """Three panels: per-token KL (histogram, log x), router flip rate per layer, tokens per expert per
        layer (engine bars, reference outlines)."""
        plt = pyplot()
        fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 10))
        s = self.summary
        title = f"eval: {self.backend} engine ({self.kind}), {s['tokens']} tokens, ctx {self.ctx}\n" \
                f"perplexity {s['perplexity']:.4g}"
        if self.kl:
            title += (f" (reference {s['reference_perplexity']:.4g}), KL mean {self.kl['mean']:.3g} "
                      f"p99 {self.kl['p99']:.3g}, top-1 agreement {s['top1_agreement']:.2%}")
        fig.suptitle(title, fontsize=10)
        if self.kl_values.size:
            kl = np.maximum(self.kl_values, 1e-12)
            ax1.hist(kl, bins=np.logspace(np.log10(kl.min()), np.log10(kl.max()) + 1e-9, 60), color="tab:blue")
            ax1.set_xscale("log")
            for q, style in (("median", "--"), ("p99", ":")):
                ax1.axvline(max(self.kl[q], 1e-12), color="red", linestyle=style, label=q)
            ax1.legend(fontsize=8)
        else:
            ax1.text(0.5, 0.5, "no reference: --reference or --reference-logits", ha="center", transform=ax1.transAxes)
        ax1.set_xlabel("KL(reference || engine) per token (nats)")
        ax1.set_ylabel("tokens")
        if self.router_flip_rate:
            layers = range(len(self.router_flip_rate))
            ax2.bar(layers, self.router_flip_rate, color="tab:orange")
            ax2.set_xticks(list(layers))
            ax2.set_ylim(0, max(0.01, 1.2 * max(self.router_flip_rate)))
        else:
            ax2.text(0.5, 0.5, "router flips need routing on both sides (export --debug-outputs)", ha="center",
                     transform=ax2.transAxes)
        ax2.set_ylabel("router flip rate\n(top-k set differs)")
        ax2.set_xlabel("layer")
        self._plot_load(ax3)
        fig.tight_layout()
        return save_figure(fig, path, 100)

    def _plot_load(self, ax) -> None:
        load = np.asarray(self.expert_load if self.expert_load else self.reference_expert_load or [[0]])
        layers, experts = load.shape
        width = 0.8 / max(layers, 1)
        for i in range(layers):
            x = np.arange(experts) + i * width
            if self.expert_load:
                ax.bar(x, self.expert_load[i], width, label=f"layer {i}")
            if self.reference_expert_load:
                ax.bar(x, self.reference_expert_load[i], width, fill=False, edgecolor="black", linewidth=0.6,
                       label="reference" if i == 0 else None)
        ax.set_xticks(np.arange(experts) + 0.4 - width / 2, [str(e) for e in range(experts)])
        ax.set_xlabel("expert")
        ax.set_ylabel("tokens routed")
        ax.legend(fontsize=7, ncol=min(layers + 1, 8))


def _weights(engine) -> str | None:
    scheme = scheme_of(engine.contract)
    return scheme.name if scheme else None
