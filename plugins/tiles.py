"""GEMM tile configurations (the plugins' tactics) and the alignment block they share.

The alignment block (MoEAlign's `block_size` field) fixes output shapes, so it is chosen once, at the
largest BLOCK_M; a tactic may use any BLOCK_M that divides it, and its row tiles that hold only padding
return at once. Decode (T = 1..8: at most T*k real rows per expert) wants thin 16-row tiles that touch
only the rows in use; prefill (T in the thousands: full 64-row tiles) wants wide tiles that reuse each
weight tile across many rows. Weight-streaming dominates decode, so its tiles favour a wide K step.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN_BLOCK = 64


@dataclass(frozen=True)
class Tile:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


TACTICS: dict[int, Tile] = {
    1: Tile(16, 64, 128, 4, 3),  # decode: thin rows, wide K for weight streaming
    2: Tile(32, 64, 64, 4, 3),  # mid-size batches
    3: Tile(64, 128, 32, 8, 3),  # prefill: weight reuse across 64 rows
}
CPU_TACTIC = 1  # the interpreter's cost is per program: few, thin tiles


def tile_for(tactic: int, dtype: str, quantized: bool = False) -> Tile:
    """fp32 tiles take half the K step (at most 32 when the weights are dequantized in the kernel, whose fp32
    weight tiles are staged in shared memory) and two stages: every variant then fits the default 48 KB of
    shared memory, so no launch needs the large-shared-memory opt-in (tests/plugins/test_aot.py)."""
    tile = TACTICS[tactic]
    if dtype != "fp32":
        return tile
    block_k = max(16, tile.block_k // 2)
    return Tile(tile.block_m, tile.block_n, min(block_k, 32) if quantized else block_k, tile.num_warps, 2)


def check(tile: Tile, align_block: int) -> None:
    if align_block % tile.block_m:
        raise ValueError(f"BLOCK_M={tile.block_m} must divide the alignment block {align_block}")
