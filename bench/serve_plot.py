"""The serve benchmark PNG: tokens/s against concurrent clients (with the engine alone and linear scaling
for reference), and latency percentiles against clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixtral_trt.common.fileio import atomic_file


def gap_ms(run: dict[str, Any], digits: int = 0) -> str:
    """A run's median gap between streamed tokens in ms; "n/a" when no request streamed two pieces of text (a
    few tokens that decode to text only together)."""
    p50 = run["token_gap_s"].get("p50")
    return "n/a" if p50 is None else f"{p50 * 1000:.{digits}f}"


def save_serve_plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = result["best"]
    ns = sorted(int(n) for n in best)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    served = [best[str(n)]["tokens_per_s"] for n in ns]
    ax.plot(ns, served, "o-", label="server (best run)")
    for n in ns:
        runs = [r["tokens_per_s"] for r in result["runs"][str(n)]]
        ax.scatter([n] * len(runs), runs, color="tab:blue", alpha=0.3, s=12)
    alone = result.get("engine_alone_tokens_per_s", {})
    if alone:
        ax.plot(ns, [alone[str(n)] for n in ns], "s--", color="tab:gray", label="engine alone (batch N, greedy)")
    ax.plot(ns, [served[0] * n / ns[0] for n in ns], ":", color="tab:red", label="linear in N")
    ax.set_ylim(0, max(served + list(alone.values())) * 1.15)
    ax.set_xlabel("concurrent clients N")
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"{result['preset']}: throughput ({result['settings']['max_tokens']} tokens per request)")
    ax.set_xticks(ns)
    ax.legend(fontsize=8)
    ax = axes[1]
    for key, label, style in (("latency_s", "request latency", "-"), ("ttft_s", "time to first token", "--")):
        for q, marker in (("p50", "o"), ("p90", "^")):
            ax.plot(ns, [best[str(n)][key][q] for n in ns], marker=marker, linestyle=style, label=f"{label} {q}")
    gaps = [gap_ms(best[str(n)]) for n in ns]
    ax.set_xlabel("concurrent clients N")
    ax.set_ylabel("seconds")
    ax.set_xticks(ns)
    ax.set_title("latency (median gap between tokens: " + ", ".join(gaps) + " ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, mode="wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
