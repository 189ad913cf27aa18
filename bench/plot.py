"""The benchmark PNG: decode and prefill throughput per implementation, and the MoE layer alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixtral_trt.common.fileio import atomic_file


def save_bench_plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peer = result.get("peer")
    fig, axes = plt.subplots(1, 4 if peer else 3, figsize=(19 if peer else 14, 4.6))
    decode = {**result["decode"], **{n: q["decode_tok_s"] for n, q in result.get("quantized", {}).items()}}
    prefill = {**result["prefill"], **{n: q["prefill_tok_s"] for n, q in result.get("quantized", {}).items()}}
    names = list(decode)
    colors = ["tab:gray" if n in ("torch_ref", "hf_transformers") else "tab:green" if " int" in n
              else "tab:blue" for n in names]
    ax = axes[0]
    ax.bar(names, [decode[n] for n in names], color=colors)
    roof = result["decode_roofline_tok_s"]
    ax.axhline(roof, color="red", linestyle="--", label=f"roofline {roof:.0f} tok/s")
    ax.axhline(roof / 2, color="red", linestyle=":", label="50% of roofline")
    ax.set_title(f"decode, batch 1 (context {result['settings']['context']})")
    ax.set_ylabel("tokens / s")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.bar(names, [prefill[n] for n in names], color=colors)
    ax.set_title(f"prefill ({result['settings']['prefill_tokens']}-token prompt)")
    ax.set_ylabel("tokens / s")
    ax = axes[2]
    moe = result["moe_layer"]["by_tokens"]
    kinds = [("sparse_ms", "ORT MoE (sparse)"), ("dense_ms", "dense (all experts)"),
             ("torch_sparse_ms", "torch eager (sparse)")]
    width = 0.27
    for j, (key, label) in enumerate(kinds):
        xs = [i + (j - 1) * width for i in range(len(moe))]
        ax.bar(xs, [moe[t][key] for t in moe], width, label=label)
    ax.set_xticks(range(len(moe)), [f"T = {t}" for t in moe])
    ax.set_yscale("log")
    ax.set_ylabel("ms per MoE layer")
    ax.set_title(f"MoE layer alone: sparse / dense = {result['moe_layer']['sparse_over_dense']:.2f} at "
                 f"T = {result['moe_layer']['tokens']}")
    ax.legend(fontsize=8)
    if peer:
        _peer_panel(axes[3], peer)
    for a in axes[:2]:
        a.tick_params(axis="x", rotation=30)
    fig.suptitle(f"mixtral-trt bench: preset {result['preset']}, {result['settings']['threads']} threads, "
                 f"roofline bandwidth {result['memory_bandwidth_gbs']:.1f} GB/s")
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _peer_panel(ax, peer: dict[str, Any]) -> None:
    """Ours vs llama.cpp per row, the ratio above each pair."""
    rows = [r for r, v in peer["ratios"].items() if v["ours"] or v["llama_cpp"]]
    xs = range(len(rows))
    ours = [peer["ratios"][r]["ours"] or 0 for r in rows]
    theirs = [peer["ratios"][r]["llama_cpp"] or 0 for r in rows]
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="ours (ort)", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], theirs, 0.4, label="llama.cpp", color="tab:orange")
    for x, r in zip(xs, rows, strict=True):
        ratio = peer["ratios"][r]["ratio"]
        if ratio:
            ax.annotate(f"{ratio:.2f}x", (x, max(ours[x], theirs[x])), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [f"{r}\n({peer['ratios'][r]['llama_cpp_type']})" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("tokens / s")
    ax.set_title("ours vs llama.cpp, same checkpoint")
    ax.legend(fontsize=8)
