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


# Stages: with the alignment hints (plugins/aot.py) the K loop is pipelined through shared memory, one tile set
# per stage; TensorRT's AOT launch has no opt-in above 48 KB, so the widest tiles take 2 (3: 72 KB and 60 KB).
TACTICS: dict[int, Tile] = {
    1: Tile(16, 64, 128, 4, 2),  # decode: thin rows, wide K for weight streaming
    2: Tile(32, 64, 64, 4, 3),  # mid-size batches
    3: Tile(64, 128, 32, 8, 2),  # prefill: weight reuse across 64 rows
}
CPU_TACTIC = 1  # the interpreter's cost is per program: few, thin tiles
# Rows per expert at which the thin tiles stop paying, for Mixtral's routing (k/E = 2/8: T/4 rows per expert)
ROWS_PER_TOKEN = 0.25


def tactic_for_tokens(tokens: int) -> int:
    """The tactic for an optimization profile whose opt token count (batch x seq) is `tokens`. TensorRT times
    tactics on made-up inputs, and with index data of zeros every tile returns at once: its timings do not rank
    the tactics, so the GEMMs offer this one per profile (plugins/trt_registry.py). Rows per expert ~ T/4:
    up to 16 (a 16-row tile holds them: decode), up to 32, then full 64-row tiles (prefill)."""
    rows = tokens * ROWS_PER_TOKEN
    return 1 if rows <= 16 else 2 if rows <= 32 else 3


# Decode tiles with dequantized weights (fp16/bf16): the codes' unpacking (shift, mask, scale per element) holds
# a [BLOCK_K, BLOCK_N] int32 and float32 tile per projection next to the accumulators; at 16 x 64 x 128 that took
# every register and spilled (int4 SwiGLU: 255 registers, 132 B/thread on sm_90a). Half the K step with a third
# stage keeps 192 K of weights in flight (2 x 128 before) at 80-168 registers (plugins/spills.py).
QUANT_DECODE = Tile(16, 64, 64, 4, 3)
# With stored zero points (a checkpoint's codes: MoEGemmSwiGLUQZ / MoEGemmDownQZ) each weight tile also holds its
# [BLOCK_K, BLOCK_N] zero points next to the codes and scales: the mid-size tile spilled (act-order fp16 / bf16
# SwiGLU on sm_90a, 8 B/thread at 168 registers) until it took 8 warps (108-170 registers; a halved K step spilled
# nothing but lost the act-order variant's every vector load), and the fp32 prefill tile (255 registers, up to
# 64 B/thread) until its N width was halved (plugins/spills.py).
ZEROS_TILES = {("half", 2): Tile(32, 64, 64, 8, 3), ("fp32", 3): Tile(64, 64, 16, 8, 2)}
# Act-order (the A tile gathered in each expert's input order, element by element): the fp16 / bf16 prefill tile's
# 32-wide K step left no vector load at all (the codes' 16 bytes per row, the gathered A), and a 64-wide one spilled
# at 64 rows (sm_80: 28 B/thread): act-order prefill takes the 32-row tile of tactic 2.
ORDERED_TILES = {("half", 3): ZEROS_TILES[("half", 2)]}
# FP8 e4m3 weights (MoEGemmSwiGLUF8 / MoEGemmDownF8: the Q kernels decoding each byte with integer ops): the fp32
# prefill tile spilled on sm_90a (255 registers, 20-32 B/thread) until its N width was halved, as with zero points.
F8_TILES = {("fp32", 3): ZEROS_TILES[("fp32", 3)]}
# fp32 tiles use IEEE dots (FMA, no tensor cores): both operands live in registers, spread over 8 warps.
FP32_WARPS = 8


def tile_for(tactic: int, dtype: str, quantized: bool = False, zeros: bool = False, ordered: bool = False,
             f8: bool = False) -> Tile:
    """The tile of `tactic` for this activation dtype and weight kind; every one assembles without register spills
    on sm_90a and sm_80 (tests/plugins/test_aot.py). fp32 tiles take half the K step (16 when the weights are
    dequantized in the kernel, whose fp32 weight tiles are staged in shared memory), two stages and 8 warps: every
    variant then fits the default 48 KB of shared memory, so no launch needs the large-shared-memory opt-in
    (tests/plugins/test_aot.py). The quantized decode tile is QUANT_DECODE; `zeros` (quantized with stored zero
    points) takes ZEROS_TILES where they differ, `ordered` (act-order) ORDERED_TILES before those, `f8` (FP8 e4m3
    weights) F8_TILES."""
    kind = ("fp32" if dtype == "fp32" else "half", tactic)
    if f8 and (tile := F8_TILES.get(kind)):
        return tile
    if ordered and (tile := ORDERED_TILES.get(kind)):
        return tile
    if zeros and (tile := ZEROS_TILES.get(kind)):
        return tile
    tile = TACTICS[tactic]
    if dtype != "fp32":
        return QUANT_DECODE if quantized and tactic == 1 else tile
    block_k = max(16, tile.block_k // 2)
    return Tile(tile.block_m, tile.block_n, 16 if quantized else block_k, max(tile.num_warps, FP32_WARPS), 2)


def check(tile: Tile, align_block: int) -> None:
    if align_block % tile.block_m:
        raise ValueError(f"BLOCK_M={tile.block_m} must divide the alignment block {align_block}")
