"""Ragged attention: the canonical graph with each query's visible keys as an input, so that one engine call
can carry rows with different numbers of new tokens and different pasts, packed into one sequence.

The canonical graph builds every layer's additive attention bias from a key-padding mask [B, S] and the slot
order (mixtral_ref.layers.attention_bias: visible = causal & window & mask, then 0 / -inf). A key-padding mask
is shared by all queries of a row, so a batch mixing decode rows (one new token) with a prompt chunk (T new
tokens) must pad every row to T tokens: (B + 1) * T tokens through every layer for B + T real ones. With the
visibility as an input `attention_visible` [B, T, S] (bool, True = query t sees key slot s), the rows can be
packed as batch 1: their pasts one after another in one cache sequence, their new tokens one after another
(runtime/ragged.py builds the feeds), each query seeing its own row's keys only (and its window, which the
caller applies now: the graph's own causal and window terms go dead with the mask's).

This lowering finds the one And node that combines the key-padding mask with the causal (and window) terms,
by what it reads (attention_mask, through Unsqueeze / Cast), and feeds its consumers the new input instead.
`attention_mask` stays an input: the graph still reads its shape (the bias's [B, T, S] zeros).
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from mixtral_trt.common.contract import ATTENTION_VISIBLE as VISIBLE
from mixtral_trt.common.contract import EXTERNAL_DATA, MODEL_FILE
from mixtral_trt.common.errors import MixtralTrtError

from .common import tidy

_PASS_THROUGH = ("Unsqueeze", "Cast", "Reshape", "Expand")  # what lies between attention_mask and the And


def _reads_mask(value: ir.Value, mask: ir.Value) -> bool:
    """True when `value` is the attention_mask or derives from it through shape-only ops."""
    while value is not mask:
        node = value.producer()
        if node is None or node.op_type not in _PASS_THROUGH:
            return False
        value = node.inputs[0]
    return True


def expose_visibility(model: ir.Model) -> ir.Model:
    """The graph with `attention_visible` in place of its causal & window & key-padding product (see above)."""
    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    if VISIBLE in inputs:
        raise MixtralTrtError(f"the graph already takes {VISIBLE}")
    mask = inputs.get("attention_mask")
    if mask is None or "position_ids" not in inputs:
        raise MixtralTrtError("ragged attention: the graph has no attention_mask / position_ids input (a "
                              "GroupQueryAttention engine's attention is one op: export the canonical graph)")
    ands = [n for n in graph if n.op_type == "And" and any(v is not None and _reads_mask(v, mask) for v in n.inputs)]
    if len(ands) != 1:
        raise MixtralTrtError(f"ragged attention: expected one And of the causal terms and attention_mask, found "
                              f"{len(ands)} ({', '.join(str(n.name) for n in ands)})")
    product = ands[0].outputs[0]
    visible = ir.Value(name=VISIBLE, type=ir.TensorType(ir.DataType.BOOL),
                       shape=ir.Shape([mask.shape[0], "seq", mask.shape[1]]))
    graph.inputs.append(visible)
    product.replace_all_uses_with(visible)
    return tidy(model)


def write_ragged(engine_dir: Path, out_dir: Path) -> Path:
    """`out_dir`/model.onnx: the engine's graph with ragged attention, its weights shared with the engine's
    (a hard link to its external data file: ONNX Runtime opens data inside the model's folder only, no
    symlinks; a copy where the link cannot be made). Returns the model path."""
    source = Path(engine_dir) / MODEL_FILE
    if not source.is_file():
        raise MixtralTrtError(f"{engine_dir}: no {MODEL_FILE} (an ONNX Runtime engine directory is needed)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, linked = Path(engine_dir) / EXTERNAL_DATA, out_dir / EXTERNAL_DATA
    if data.is_file() and not linked.exists():
        try:
            linked.hardlink_to(data)
        except OSError:
            import shutil

            shutil.copyfile(data, linked)
    model = expose_visibility(ir.load(source))
    ir.save(model, out_dir / MODEL_FILE)  # its weights stay references into the (linked) data file
    return out_dir / MODEL_FILE
