"""How to split the experts over N ranks: within each expert (TP) or by expert (EP), measured.

Both store the same bytes per rank and all-reduce the same [T, H] tensor after the MoE (tokens are
replicated after the attention all-reduce); they differ in how evenly the work falls on the ranks:

- balance: EP's busiest rank's (token, expert) pairs over the mean, top-k routing, uniform router logits
  and a moderate popularity skew; TP is 1.0 by construction (every rank does every pair at I/N);
- time: one MoE layer with the reference's sparse op, the TP rank vs the slowest EP rank (1 thread).

    python -m mixtral_trt.bench.moe_split          (run it alone: `flock -x /tmp/mixtral-cpu.lock ...`)

E experts, k per token, H hidden, I intermediate, T tokens, N ranks.
"""

from __future__ import annotations

import itertools
import json
import time

import numpy as np

E, K = 8, 2  # Mixtral
SKEW = np.log(np.array([2.0, 1.5, 1.2, 1.0, 1.0, 0.8, 0.7, 0.5]))  # router logit bias per expert


def routing(tokens: int, rng: np.random.Generator, skew: np.ndarray | None = None) -> np.ndarray:
    """[T, k] expert ids of the top-k of N(0, 1) (+ skew) router logits."""
    logits = rng.standard_normal((tokens, E)) + (0 if skew is None else skew)
    return np.argsort(-logits, axis=1)[:, :K]


def ep_max_over_mean(world: int, tokens: int, rng: np.random.Generator, skew=None, trials: int = 200) -> float:
    ratios = []
    for _ in range(trials):
        loads = np.bincount((routing(tokens, rng, skew) // (E // world)).ravel(), minlength=world)
        ratios.append(loads.max() / (tokens * K / world))
    return float(np.mean(ratios))


def one_token_split(world: int) -> dict[int, float]:
    """Over all expert pairs of one token: fraction with their busiest EP rank doing 1 or 2 experts."""
    busiest = [np.bincount(np.array(p) // (E // world), minlength=world).max()
               for p in itertools.combinations(range(E), K)]
    return {int(v): busiest.count(v) / len(busiest) for v in sorted(set(busiest))}


def layer_ms(world: int, tokens: int, hidden: int = 512, inter: int = 1792, repeats: int = 5) -> tuple[float, float]:
    """(TP rank ms, slowest EP rank ms) of one MoE layer, fp32, one thread."""
    import torch

    from mixtral_trt.mixtral_ref.moe import moe_experts

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g)
    experts = torch.from_numpy(routing(tokens, np.random.default_rng(0))).to(torch.int32)
    weights = torch.full((tokens, K), 0.5)
    w13 = torch.randn(E, 2 * inter, hidden, generator=g) * 0.02
    w2 = torch.randn(E, hidden, inter, generator=g) * 0.02

    def ms(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3

    rows = inter // world
    tp13 = torch.cat([w13[:, :rows], w13[:, inter:inter + rows]], 1).contiguous()
    tp = ms(lambda: moe_experts(x, experts, weights, tp13, w2[:, :, :rows].contiguous()))
    per, ep = E // world, []
    for rank in range(world):
        tok, slot = ((experts >= rank * per) & (experts < (rank + 1) * per)).nonzero(as_tuple=True)
        if not len(tok):
            ep.append(0.0)
            continue
        local = (experts[tok, slot] - rank * per).to(torch.int32)[:, None]  # [P, 1]: this rank's pairs
        pair_w, xs = weights[tok, slot][:, None], x[tok]
        ep.append(ms(lambda local=local, pair_w=pair_w, xs=xs, tok=tok, rank=rank: torch.zeros_like(x).index_add_(
            0, tok, moe_experts(xs, local, pair_w, w13[rank * per:(rank + 1) * per], w2[rank * per:(rank + 1) * per]))))
    return tp, max(ep)


def main() -> None:
    rng = np.random.default_rng(0)
    out = {"one_token": {n: one_token_split(n) for n in (2, 4, 8)},
           "ep_max_over_mean": {f"N={n} T={t}": {"uniform": round(ep_max_over_mean(n, t, rng), 3),
                                                  "skewed": round(ep_max_over_mean(n, t, rng, SKEW), 3)}
                                for n in (2, 4, 8) for t in (1, 8, 64, 512)},
           "layer_ms_tp_vs_slowest_ep": {f"N={n} T={t}": [round(v, 3) for v in layer_ms(n, t)]
                                         for n in (2, 4, 8) for t in (1, 16, 128)}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
