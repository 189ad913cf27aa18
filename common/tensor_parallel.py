"""Tensor parallelism: which share of Mixtral each rank holds, and how a graph contract records it.

Attention is split by heads. With N ranks and G kv heads: N <= G gives rank r the kv heads
[r*G/N, (r+1)*G/N) and their query heads, so no kv head is stored twice; N > G gives rank r the kv head
r // (N/G) (each kv head on N/G ranks) and the query heads [r*Nq/N, (r+1)*Nq/N) that use it. The experts
are split within each expert (TP): rank r holds the intermediate rows [r*I/N, (r+1)*I/N) of every
expert's gate, up and down projections (chosen over expert parallelism by measurement:
docs/TENSOR_PARALLEL.md). The embedding and the output head are split by vocabulary rows
(Vs = ceil(V/N) rows each, the last rank zero-padded). Norms and the router are replicated.

Partial sums meet in collectives (TensorRT `DistCollective` nodes in the rank graphs): an all-reduce of
the embedding, of each attention output projection and of each MoE output, and an all-gather of the logits.
The whole-model contract (`graph.json` of an export directory) and every rank's contract carry this record
in `extra["tensor_parallel"]`. Nq query heads, G kv heads, D head_dim, I intermediate, V vocab.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .config import MixtralConfig
from .errors import MixtralTrtError

if TYPE_CHECKING:
    from .contract import GraphContract

KEY = "tensor_parallel"  # GraphContract.extra key
RANK_DIR = "rank{rank}"  # a rank's subdirectory in export and engine directories


def check_world_size(cfg: MixtralConfig, world_size: int, quant_block: int | None = None) -> None:
    """One line naming `--tensor-parallel` when `cfg` cannot be split `world_size` ways (`quant_block`: the
    quantized experts' inputs per scale, 0 = per output row; None = not quantized)."""
    what = f"--tensor-parallel {world_size}"
    if world_size < 1:
        raise MixtralTrtError(f"{what}: must be at least 1")
    g, nq, inter = cfg.num_kv_heads, cfg.num_heads, cfg.intermediate_size
    if world_size <= g and g % world_size:
        raise MixtralTrtError(f"{what}: the {g} kv heads do not split evenly over {world_size} ranks")
    if world_size > g and (world_size % g or nq % world_size):
        raise MixtralTrtError(f"{what}: with more ranks than the {g} kv heads, the ranks must be a multiple of "
                              f"them and divide the {nq} query heads")
    if inter % world_size:
        raise MixtralTrtError(f"{what}: the expert intermediate size {inter} does not split evenly")
    if quant_block == 0 and world_size > 1:
        raise MixtralTrtError(f"{what}: quantized experts need --quant-block B (B dividing {inter // world_size}) "
                              "when split: per-row scales of the down projection would span ranks")
    if quant_block and (inter // world_size) % quant_block:
        raise MixtralTrtError(f"{what}: each rank's {inter // world_size} expert inputs of the down projection "
                              f"are not a multiple of --quant-block {quant_block}")


@dataclass(frozen=True)
class Collective:
    """One collective of a rank graph, as recorded in the contract."""

    op: str  # all_reduce | all_gather (DistCollective `collective_operation`)
    reduce: str  # sum | none
    input: str  # tensor name in the rank graph
    output: str
    after: str  # what it joins: embedding | attention.{i} | moe.{i} | logits


@dataclass(frozen=True)
class TensorParallel:
    """The sharding of one export: world size, this graph's rank (None: the whole model) and collectives."""

    world_size: int
    rank: int | None = None
    moe: str = "tp"  # experts split within each expert (the only mode)
    collectives: tuple[Collective, ...] = field(default_factory=tuple)

    # ---- the split --------------------------------------------------------------------------------
    def kv_heads(self, cfg: MixtralConfig, rank: int) -> list[int]:
        n, g = self.world_size, cfg.num_kv_heads
        if n <= g:
            return list(range(rank * g // n, (rank + 1) * g // n))
        return [rank // (n // g)]

    def q_heads(self, cfg: MixtralConfig, rank: int) -> list[int]:
        per = cfg.num_heads // self.world_size
        return list(range(rank * per, (rank + 1) * per))

    def local_kv_heads(self, cfg: MixtralConfig) -> int:
        return max(cfg.num_kv_heads // self.world_size, 1)

    def vocab_rows(self, cfg: MixtralConfig) -> int:
        """Vs: embedding / output-head rows per rank."""
        return -(-cfg.vocab_size // self.world_size)

    def vocab_range(self, cfg: MixtralConfig, rank: int) -> tuple[int, int]:
        """Rows [start, end) of the vocabulary that rank `rank` holds (end - start <= Vs)."""
        vs = self.vocab_rows(cfg)
        return min(rank * vs, cfg.vocab_size), min((rank + 1) * vs, cfg.vocab_size)

    def inter_range(self, cfg: MixtralConfig, rank: int) -> tuple[int, int]:
        per = cfg.intermediate_size // self.world_size
        return rank * per, (rank + 1) * per

    def local_config(self, cfg: MixtralConfig) -> MixtralConfig:
        """The config of one rank's attention and experts (vocabulary and hidden size unchanged)."""
        return cfg.replace(num_heads=cfg.num_heads // self.world_size, num_kv_heads=self.local_kv_heads(cfg),
                           intermediate_size=cfg.intermediate_size // self.world_size)

    def kv_owner(self, cfg: MixtralConfig, head: int) -> tuple[int, int]:
        """(rank, local index) of the first rank holding global kv head `head`."""
        for rank in range(self.world_size):
            heads = self.kv_heads(cfg, rank)
            if head in heads:
                return rank, heads.index(head)
        raise ValueError(f"kv head {head} is on no rank")

    def for_rank(self, rank: int) -> TensorParallel:
        return TensorParallel(self.world_size, rank, self.moe, self.collectives)

    # ---- json -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "graph.json") -> TensorParallel:
        try:
            return cls(d["world_size"], d.get("rank"), d.get("moe", "tp"),
                       tuple(Collective(**c) for c in d.get("collectives", ())))
        except (KeyError, TypeError) as e:
            raise MixtralTrtError(f"{source}: malformed {KEY} record ({e})") from None

    @classmethod
    def of(cls, contract: GraphContract) -> TensorParallel | None:
        """The record in `contract`, or None for a single-device graph."""
        d = contract.extra.get(KEY)
        return None if d is None else cls.from_dict(d)
