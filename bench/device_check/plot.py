"""The device check's PNG: phase 4's MoE layer times as fractions of their floors, and the kernel errors of
phase 2 against their tolerances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixtral_trt.common.fileio import atomic_file


def save_plot(report: dict[str, Any], path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = report["phases"].get("plugin chain", {}).get("figures", {}).get("moe_layer", [])
    for weights in ("bf16", "int8", "int4"):
        best: dict[int, dict[str, Any]] = {}
        for r in rows:
            if r["weights"] == weights and (r["T"] not in best or r["ms"] < best[r["T"]]["ms"]):
                best[r["T"]] = r
        if best:
            ts = sorted(best)
            left.plot(ts, [max(best[t]["fraction_of_bandwidth_floor"], best[t]["fraction_of_matmul_floor"])
                           for t in ts], marker="o", label=weights)
    left.set(xscale="log", xlabel="tokens T", ylabel="floor / measured (best tactic)",
             title=f"MoE layer vs its floor ({report['machine']})")
    if rows:
        left.legend()
    import numpy as np

    checks = report["phases"].get("kernels", {}).get("checks", [])
    bins = np.logspace(-9, 0, 37)
    for dtype in ("fp32", "fp16", "bf16"):  # an unwritten output (inf) shows in the last bin
        errors = [min(max(c["value"], 1e-9), 1.0) for c in checks
                  if f" {dtype} " in f" {c['what']} " and isinstance(c["value"], float)]
        if errors:
            right.hist(errors, bins=bins, alpha=0.6, label=dtype)
    if checks:
        right.legend()
    right.set(xscale="log", xlabel="relative error (max |Δ| / max |ref|)", ylabel="kernel checks",
              title="phase 2: kernels vs references")
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path.name
