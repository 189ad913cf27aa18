"""The quantized half of the `ort` lowering: what makes int8 / int4 decode faster, not only smaller.

What ONNX Runtime 1.32's CPU kernels do per token (read from its source, measured on the `small` preset):

- `com.microsoft::QMoE` with per-channel scales (block_size 0) dequantizes each routed expert's whole
  weight to float32 on every call, then runs an SGEMM: it reads the int8 codes *and* writes and reads the
  float copy, so int8 decoded no faster than fp32. With block-wise scales (block_size > 0, scales a
  constant initializer) it prepacks the experts for MLAS's QNBit GEMM (the MatMulNBits kernels) at session
  load and runs each routed expert as one GEMM threaded over the output rows: the int8 engine goes from
  53 to 134 tok/s. 8-bit QNBit GEMM exists only with int8 activations (each block of `block_size` inputs
  rounded to int8, int32 accumulation); 4-bit also has a float32-activation kernel (accuracy_level 0), much
  slower at decode than its int8-activation one (accuracy_level 4).
- `mixtral::LinearQ` (the attention projections and the LM head, quantized by `export --quantize`)
  becomes `com.microsoft::MatMulNBits` over the same bytes (codes [N, K/block, block*bits/8], scales
  [N*K/block], implicit zero point 2^(bits-1)): no re-quantization. MatMulNBits is fast only with
  accuracy_level 4 (int8 activations); at level 0 8-bit dequantizes and 4-bit computes in float32.

`ACCURACY_LEVEL` is the choice per width; `activations_block` tells the build (manifest) and parity
whether an engine's kernels round activations to int8, so its reference does the same.
N output features, K input features.
"""

from __future__ import annotations

import onnx_ir as ir

from mixtral_trt.common.ort_versions import known

from ..ops.spec import DOMAIN, LINEAR_Q, LINEAR_QZ
from .common import derived_initializer, swap_in

MS_DOMAIN = "com.microsoft"
# MatMulNBits / QMoE accuracy_level per weight width: 4 = int8 activations, the fast kernels for both widths.
# Measured on `small` (2 threads, one quiet window, best of 6): int4 with float32 activations (level 0) decodes
# at 237 tok/s, with int8 activations at 431; 8-bit has no fast float32-activation kernel at all.
ACCURACY_LEVEL = {8: 4, 4: 4}


def activations_block(bits: int, block_size: int, schema: dict[str, frozenset[str]] | None = None) -> int | None:
    """The block size in which the ort kernels round activations to int8, or None (float activations, also
    where the installed onnxruntime's QMoE has no accuracy_level)."""
    level = qmoe_attributes(bits, block_size, schema).get("accuracy_level", 0)
    return block_size if block_size and level == 4 else None


def qmoe_attributes(bits: int, block_size: int, schema: dict[str, frozenset[str]] | None = None) -> dict[str, int]:
    """QMoE attributes beyond the MoE ones: width, block (block-wise: the QNBit GEMM path), accuracy; only those
    the installed onnxruntime's QMoE knows (`schema`: op -> attribute names; common/ort_versions.py), which
    then reads the codes as raw (weights_prepacked absent: before 1.28 only the CPU EP did, and the runtime
    refuses such a QMoE on the CUDA EP)."""
    attributes = {"expert_weight_bits": bits, "weights_prepacked": 0}
    if block_size:
        attributes["block_size"] = block_size
        attributes["accuracy_level"] = ACCURACY_LEVEL[bits]
    return known("QMoE", attributes, schema)


def nbits_operands(graph: ir.Graph, codes: ir.Value, scales: ir.Value, bits: int, block: int, pick=None,
                   suffix: str = "nbits") -> tuple[ir.Value, ir.Value, dict[str, int]]:
    """MatMulNBits' B [N, K/block, block*bits/8] and scales [N*K/block], derived lazily from codes [N, K*bits/8]
    and scales (of `pick`(array), e.g. one expert's slice of [E, N, ...]: then `codes`' last two dimensions are
    N and K*bits/8), and the node's attributes; the same bytes, no re-quantization."""
    n, k = int(codes.shape[-2]), int(codes.shape[-1]) * 8 // bits
    b_shape, s_shape = (n, k // block, block * bits // 8), (n * (k // block),)
    pick = pick or (lambda a: a)
    b = derived_initializer(graph, codes, lambda a: pick(a).reshape(b_shape), b_shape, suffix)
    s = derived_initializer(graph, scales, lambda a: pick(a).reshape(s_shape), s_shape, suffix)
    return b, s, {"K": k, "N": n, "bits": bits, "block_size": block, "accuracy_level": ACCURACY_LEVEL[bits]}


def lower_linears(model: ir.Model) -> int:
    """Every LinearQ / LinearQZ node becomes MatMulNBits (LinearQZ's zero points, packed uint8 [N, ceil(K/block*
    bits/8)], are MatMulNBits' own layout); returns the number lowered."""
    graph, count = model.graph, 0
    for node in list(graph):
        if node.domain != DOMAIN or node.op_type not in (LINEAR_Q.name, LINEAR_QZ.name):
            continue
        x, codes, scales, *zeros = node.inputs
        bits, block = node.attributes["bits"].as_int(), node.attributes["block_size"].as_int()
        if codes.const_value is None or scales.const_value is None or not block:
            raise ValueError(f"{node.name}: LinearQ needs constant codes and block-wise scales for MatMulNBits")
        b, s, attributes = nbits_operands(graph, codes, scales, bits, block)
        new = ir.node("MatMulNBits", [x, b, s, *zeros], domain=MS_DOMAIN, name=f"{node.name}.nbits",
                      attributes=attributes)
        swap_in(graph, new, node.outputs[0], [node])
        count += 1
    if count:
        model.opset_imports[MS_DOMAIN] = 1
    return count
