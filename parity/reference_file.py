"""The reference's side of an evaluation, stored once per scored token and reused for many engines.

A file is `MAGIC`, a little-endian uint32 header length, a JSON header (what the file was made from: the
tokenizer's sha256, the text's sha256 and token count, ctx, stride, the reference), padding to 64 bytes, then
one fixed-size record per scored token (`record_dtype`), read through a memory map so any length fits.

A record holds the reference's full distribution as uint16-quantized log-probabilities (the idea of
llama.cpp's base-logits file): per token the log-softmax's range [lo, lo + 65535 * step] is split into 65535
equal steps, so every log-probability is kept within step / 2 = range / 131070 nats (about 3e-4 nats for a
range of 40 nats; the random test models have ranges of a few nats). `dequantize` renormalizes. The effect on
KL(ref || engine) of a token: the error of each reference log-probability is within step after
renormalization, which moves the KL by at most step * E_ref|log p/q| + KL(p̂ || p), the latter below
step² / 2 (about step² / 24 for rounding errors spread evenly). What needs no approximation is kept exactly:
the target's log-probability (perplexity), the top-1 token and its probability (agreement, |Δp|), and each
layer's top-k expert set (router flips, expert load). V * 2 + 24 + L * k bytes per token: 64 KB for V 32000.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mixtral_trt.common.errors import MixtralTrtError

MAGIC = b"MXTRT-EVAL-REF\x00\x01"
FORMAT = 1
ALIGN = 64
LEVELS = 65535  # uint16 steps of the log-probability range


def record_dtype(vocab: int, layers: int, top_k: int) -> np.dtype:
    """One scored token of the reference."""
    return np.dtype([
        ("target", "<i4"), ("target_logprob", "<f4"),  # exact log p(target)
        ("top1", "<i4"), ("top1_prob", "<f4"),  # exact argmax and its probability
        ("lo", "<f4"), ("step", "<f4"), ("q", "<u2", (vocab,)),  # log p ~= lo + step * q
        ("experts", "u1", (layers, top_k)),  # each layer's top-k expert set, sorted (layers = 0: no routing)
    ])


def quantize(logprobs: np.ndarray, records: np.ndarray) -> None:
    """Fill records' lo / step / q from log-probabilities [N, V] (float64 or float32)."""
    lp = np.asarray(logprobs, np.float64)
    lo = lp.min(-1).astype(np.float32)  # [N]
    step = ((lp.max(-1) - lo) / LEVELS).astype(np.float32)  # [N]
    safe = np.where(step > 0, step, 1.0).astype(np.float64)
    q = np.rint((lp - lo[:, None].astype(np.float64)) / safe[:, None])  # [N, V]
    records["lo"], records["step"] = lo, step
    records["q"] = np.clip(q, 0, LEVELS).astype(np.uint16)


def dequantize(records: np.ndarray):
    """Renormalized reference log-probabilities [N, V], a float64 torch tensor."""
    import torch

    q = torch.from_numpy(np.ascontiguousarray(records["q"]).astype(np.float64))  # [N, V]
    lo = torch.from_numpy(records["lo"].astype(np.float64))[:, None]
    step = torch.from_numpy(records["step"].astype(np.float64))[:, None]
    lp = lo + step * q
    return lp - torch.logsumexp(lp, -1, keepdim=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ReferenceHeader:
    tokenizer_sha256: str
    vocab_size: int
    text_sha256: str
    text_tokens: int  # text tokens used (after --max-tokens)
    ctx: int
    stride: int
    scored: int  # records
    layers: int  # 0: the reference had no routing outputs
    top_k: int
    num_experts: int
    reference: str  # what made it: "checkpoint PATH (fp32)" / "engine PATH (backend, dtype)"

    @property
    def dtype(self) -> np.dtype:
        return record_dtype(self.vocab_size, self.layers, self.top_k)

    # what a reuse must match, with the option that sets it
    CHECKED = (("tokenizer_sha256", "the tokenizer (sha256)"), ("vocab_size", "vocabulary size"),
               ("text_sha256", "the text (sha256)"), ("text_tokens", "text tokens (--max-tokens)"),
               ("ctx", "--ctx"), ("stride", "--stride"))

    def check_matches(self, other: ReferenceHeader, path: Path) -> None:
        """A one-line error naming the first difference between this file's run and `other` (this run)."""
        for name, what in self.CHECKED:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                show = (lambda v: f"{v[:12]}…") if isinstance(mine, str) else str
                raise MixtralTrtError(f"{path}: made for {what} {show(mine)}, but this run has {show(theirs)}: "
                                      "not the reference of this evaluation")


def _header_bytes(header: ReferenceHeader) -> bytes:
    body = json.dumps({"format": FORMAT, **header.__dict__}).encode()
    head = MAGIC + struct.pack("<I", len(body)) + body
    return head + b"\0" * (-len(head) % ALIGN)


def write_header(f: BinaryIO, header: ReferenceHeader) -> None:
    f.write(_header_bytes(header))


def read_reference(path: str | Path) -> tuple[ReferenceHeader, np.ndarray]:
    """The header and the records (a read-only memory map) of a reference file; one-line errors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                raise MixtralTrtError(f"{path}: not a reference-logits file (written by eval --save-reference)")
            (n,) = struct.unpack("<I", f.read(4))
            raw = json.loads(f.read(n))
        fields = {k: raw[k] for k in ReferenceHeader.__dataclass_fields__}
        if raw.get("format") != FORMAT:
            raise MixtralTrtError(f"{path}: reference-logits format {raw.get('format')}, this version reads {FORMAT}")
        header = ReferenceHeader(**fields)
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise MixtralTrtError(f"{path}: damaged reference-logits header") from None
    except OSError as e:
        raise MixtralTrtError(f"{path}: {e.strerror or e}") from None
    offset = len(MAGIC) + 4 + n
    offset += -offset % ALIGN
    expected = offset + header.scored * header.dtype.itemsize
    if path.stat().st_size != expected:
        raise MixtralTrtError(f"{path}: {path.stat().st_size} bytes, expected {expected} for {header.scored} "
                              "scored tokens: truncated or damaged")
    records = np.memmap(path, dtype=header.dtype, mode="r", offset=offset, shape=(header.scored,))
    return header, records
