"""Each rank's share of every weight: sliced from an in-memory state dict, or streamed from the checkpoint.

Every reference parameter, viewed as a matrix [R, C] (C = its last dimension), is cut the same way: a list
of row ranges, one column range, and zero rows appended (vocabulary padding):

| parameter | rank r keeps |
|---|---|
| attn.wq [Nq*D, H], attn.wk / wv [G*D, H] | the rows of its query / kv heads |
| attn.wo [H, Nq*D] | the columns of its query heads |
| moe.w13 [E, 2I, H] (= rows [E*2I, H]) | per expert: gate rows [i0, i1), then up rows [I+i0, I+i1) |
| moe.w2 [E, H, I] (= rows [E*H, I]) | the columns [i0, i1) |
| embed, lm_head [V, H] | the vocabulary rows [v0, v1), zero-padded to Vs rows |
| norms, router | everything (replicated) |

A streamed parameter is the vertical concatenation of its stored tensors (keymaps: one tensor, or the
per-expert w1/w3/w2 in order), so a row range is a byte range of one or more of them: `ShardTensor` reads
just those rows with positioned reads, a bounded number of rows at a time, keeps the columns, casts and
writes. A rank's files therefore hold only its share, and export memory stays bounded by the chunk size.
Parameters that need a whole-tensor transform (RoPE-permuted wq / wk of mistral checkpoints) are
materialised one at a time, as in the single-device export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.tensor_parallel import TensorParallel

from ..streaming import CHUNK_BYTES, IR_DTYPES, StreamedTensor, _bytes


@dataclass(frozen=True)
class Cut:
    """Rows (ranges, in order), columns [c0, c1) and zero rows appended, of a parameter viewed [R, C]."""

    rows: tuple[tuple[int, int], ...]
    cols: tuple[int, int]
    pad_rows: int = 0

    def shape(self, ref_shape: tuple[int, ...]) -> tuple[int, ...]:
        n = sum(b - a for a, b in self.rows) + self.pad_rows
        c = self.cols[1] - self.cols[0]
        if len(ref_shape) == 3:  # stacked experts: every expert keeps the same number of rows
            return (ref_shape[0], n // ref_shape[0], c)
        return (n, c) if len(ref_shape) == 2 else (c,)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """The cut of an in-memory reference tensor."""
        flat = t.reshape(-1, t.shape[-1])
        parts = [flat[a:b, self.cols[0]:self.cols[1]] for a, b in self.rows]
        if self.pad_rows:
            parts.append(flat.new_zeros(self.pad_rows, self.cols[1] - self.cols[0]))
        return torch.cat(parts).reshape(self.shape(tuple(t.shape))).contiguous()


def _heads(heads: list[int], d: int) -> tuple[tuple[int, int], ...]:
    return ((heads[0] * d, (heads[-1] + 1) * d),)  # a rank's heads are contiguous


def cut_for(name: str, shape: tuple[int, ...], cfg: MixtralConfig, tp: TensorParallel, rank: int) -> Cut:
    """How rank `rank` cuts reference parameter `name` of shape `shape`."""
    d, cols = cfg.head_dim, shape[-1]
    everything = Cut(((0, int(np.prod(shape[:-1], dtype=np.int64))),), (0, cols))
    if name.endswith("attn.wq.weight"):
        return Cut(_heads(tp.q_heads(cfg, rank), d), (0, cols))
    if name.endswith(("attn.wk.weight", "attn.wv.weight")):
        return Cut(_heads(tp.kv_heads(cfg, rank), d), (0, cols))
    if name.endswith("attn.wo.weight"):
        (c0, c1), = _heads(tp.q_heads(cfg, rank), d)
        return Cut(((0, shape[0]),), (c0, c1))
    if name.endswith("moe.w13"):
        e, two_i, _ = shape
        i0, i1 = tp.inter_range(cfg, rank)
        half = two_i // 2
        return Cut(tuple(r for x in range(e) for r in ((x * two_i + i0, x * two_i + i1),
                                                       (x * two_i + half + i0, x * two_i + half + i1))), (0, cols))
    if name.endswith("moe.w2"):
        i0, i1 = tp.inter_range(cfg, rank)
        return Cut(((0, shape[0] * shape[1]),), (i0, i1))
    if name in ("embed.weight", "lm_head.weight"):
        v0, v1 = tp.vocab_range(cfg, rank)
        return Cut(((v0, v1),), (0, cols), tp.vocab_rows(cfg) - (v1 - v0))
    return everything


def vocab_start(cfg: MixtralConfig, tp: TensorParallel, rank: int) -> torch.Tensor:
    return torch.tensor(tp.vocab_range(cfg, rank)[0], dtype=torch.int64)


def shard_state_dict(state: dict[str, torch.Tensor], cfg: MixtralConfig, tp: TensorParallel,
                     rank: int) -> dict[str, torch.Tensor]:
    """A reference state dict -> rank `rank`'s state dict (RankMixtral's keys)."""
    out = {k: cut_for(k, tuple(t.shape), cfg, tp, rank).apply(t) for k, t in state.items()}
    out["vocab_start"] = vocab_start(cfg, tp, rank)
    return out


class ShardTensor(ir.LazyTensor):
    """Rank `rank`'s cut of a streamed parameter: `tofile` reads only the rank's rows from the checkpoint."""

    def __init__(self, source: StreamedTensor, cut: Cut, name: str) -> None:
        self.source, self.cut = source, cut
        shape = cut.shape(tuple(source.entry.shape))
        super().__init__(self._materialize, dtype=IR_DTYPES[source.torch_dtype], shape=ir.Shape(shape), name=name)

    def _materialize(self) -> ir.TensorProtocol:
        from onnx_ir.tensor_adapters import TorchTensor

        if not self.source.streamable:
            return TorchTensor(self.cut.apply(self.source._materialize().raw), name=self.name)
        rows = [r for a, b in self.cut.rows for r in self._rows(a, b)]
        if self.cut.pad_rows:
            rows.append(torch.zeros(self.cut.pad_rows, self.cut.cols[1] - self.cut.cols[0],
                                    dtype=self.source.torch_dtype))
        return TorchTensor(torch.cat(rows).reshape(tuple(self.shape)), name=self.name)

    def expert(self, e: int) -> np.ndarray:
        """Expert e's rows [N, K] as float32 (quantization reads the experts one at a time)."""
        if not self.source.streamable:
            return self._materialize().numpy()[e].astype(np.float32)
        per = int(np.prod(self.source.entry.shape[1:-1], dtype=np.int64))  # reference rows per expert
        lo, hi = e * per, (e + 1) * per
        rows = [r for a, b in self.cut.rows if a < hi and b > lo for r in self._rows(max(a, lo), min(b, hi))]
        return torch.cat(rows).float().numpy()

    def _rows(self, a: int, b: int):
        """Reference rows [a, b), columns cut, cast: read from the stored tensors in bounded chunks."""
        c0, c1 = self.cut.cols
        offset = 0  # first reference row of the current stored tensor
        for span in self.source.spans:
            cols = span.shape[-1]
            n_rows = int(np.prod(span.shape[:-1], dtype=np.int64)) if len(span.shape) > 1 else 1
            lo, hi = max(a, offset), min(b, offset + n_rows)
            item = torch.empty(0, dtype=span.dtype).element_size()
            step = max(CHUNK_BYTES // (cols * item), 1)
            for start in range(lo, hi, step):
                stop = min(hi, start + step)
                with open(span.file, "rb", buffering=0) as f:
                    f.seek(span.begin + (start - offset) * cols * item)
                    data = bytearray((stop - start) * cols * item)
                    f.readinto(data)
                yield torch.frombuffer(data, dtype=span.dtype).reshape(stop - start, cols)[:, c0:c1] \
                    .to(self.source.torch_dtype)
            offset += n_rows

    def tofile(self, file) -> None:
        if not self.source.streamable:
            file.write(self._materialize().tobytes())
            return
        for a, b in self.cut.rows:
            for chunk in self._rows(a, b):
                file.write(_bytes(chunk.contiguous()))
        if self.cut.pad_rows:
            file.write(_bytes(torch.zeros(self.cut.pad_rows, self.cut.cols[1] - self.cut.cols[0],
                                          dtype=self.source.torch_dtype)))


def streamed_shard_weights(weights: dict[str, StreamedTensor], cfg: MixtralConfig, tp: TensorParallel, rank: int,
                           prefix: str = "") -> dict[str, ir.TensorProtocol]:
    """`streaming.streamed_weights(...)` -> rank `rank`'s streamed cut of each, plus `vocab_start`."""
    from onnx_ir.tensor_adapters import TorchTensor

    out: dict[str, ir.TensorProtocol] = {
        key: ShardTensor(source, cut_for(key, tuple(source.entry.shape), cfg, tp, rank), prefix + key)
        for key, source in weights.items()}
    out["vocab_start"] = TorchTensor(vocab_start(cfg, tp, rank), name=prefix + "vocab_start")
    return out
