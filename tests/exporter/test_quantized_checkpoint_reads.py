"""A quantized checkpoint's export reads each stored tensor of a quantized linear exactly once, counted through
the readers' own seams: the streamed export's positioned reads (exporter/streaming.py `_read`: codes, scales and
zero points, three initializers written one after another) and the header-checking reader's `get`
(mixtral_ref/checkpoint.py: the act-order g_idx, at plan time). What is kept between the three writes is kept
only until written: each `.zeros` / `.input_order` initializer is written right after its `.scales`. That the
exported values are the checkpoint's is test_quantized_checkpoint_export.py's."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest

from mixtral_trt.exporter import streaming
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref import checkpoint as ref_checkpoint
from mixtral_trt.mixtral_ref.quant_checkpoint import read_checkpoint_quant
from mixtral_trt.mixtral_ref.quant_linear import stored_names
from support.quant_checkpoints import QUANT_CFG, linear_names, write_awq, write_compressed, write_gptq

pytest.importorskip("onnxruntime_genai")

CASES = {  # name -> writer; each takes a different path: act-order codes, zero points, symmetric codes, float
    "gptq-int4-asym-actorder-g32": lambda p: write_gptq(p, 4, 32, True, False, "gptq_v2"),
    "gptq-int4-sym-actorder-g32": lambda p: write_gptq(p, 4, 32, True, True, "gptq"),
    "awq-int4-g64": lambda p: write_awq(p, 64),
    "ct-int4-asym-g128": lambda p: write_compressed(p, "pack-quantized", 4, "group", 128, False),
    "ct-int4-sym-actorder-g32": lambda p: write_compressed(p, "pack-quantized", 4, "group", 32, True, actorder=True),
    "ct-int8-sym-channel": lambda p: write_compressed(p, "pack-quantized", 8, "channel", None, True),
    "gptq-int4-asym-channel": lambda p: write_gptq(p, 4, -1, False, False, "gptq_v2"),  # zeros repeated over blocks
    "ct-fp8-channel": lambda p: write_compressed(p, "float-quantized", 8, "channel"),
}


def _count_reads(monkeypatch, checkpoint) -> Counter:
    """Stored tensor name -> how many times the export reads it (both seams)."""
    names = {(span.file, span.begin): name for f in checkpoint.glob("*.safetensors")
             for name, span in streaming.read_header(f).items()}
    reads: Counter = Counter()
    positioned, get = streaming._read, ref_checkpoint._Tensors.get

    def counted_read(span):
        if isinstance(span, streaming.Span):
            reads[names[(span.file, span.begin)]] += 1
        return positioned(span)

    def counted_get(self, key):
        reads[key] += 1
        return get(self, key)

    monkeypatch.setattr(streaming, "_read", counted_read)
    monkeypatch.setattr(ref_checkpoint._Tensors, "get", counted_get)
    return reads


@pytest.mark.parametrize("name", list(CASES))
def test_each_quantized_tensor_is_read_once(name, tmp_path, monkeypatch):
    checkpoint = tmp_path / "ckpt"
    CASES[name](checkpoint)
    q = read_checkpoint_quant(checkpoint)
    stored = {s for base in linear_names(QUANT_CFG) for s in stored_names(q, base)}
    reads = _count_reads(monkeypatch, checkpoint)
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    wrong = sorted((s, reads[s]) for s in stored if reads[s] != 1)
    assert not wrong, f"{len(wrong)} of {len(stored)} stored tensors not read once: {wrong[:6]}"
    written = [i.name for i in onnx.load(onnx_dir / "model.onnx", load_external_data=False).graph.initializer]
    for before, after in zip(written, written[1:], strict=False):
        if after.endswith(".zeros"):
            assert before == after.removesuffix(".zeros") + ".scales", (before, after)
        if after.endswith(".input_order") and ".moe." in after:
            assert before.endswith((".scales", ".zeros")), (before, after)

