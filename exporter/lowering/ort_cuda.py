"""What ONNX Runtime's CUDA execution provider accepts of the `ort` lowering's com.microsoft::QMoE (from
onnxruntime's contrib_ops/cuda/moe/moe_quantization.cc): kernels for fp16 and bf16 activations only (an fp32
node would silently run on the CPU EP, with copies each way), and for integer weight-only experts a hidden and
an intermediate size that are multiples of the interleaved-weight K tile, 64 (otherwise recent builds fail and
older ones read past the last tile: garbage or NaN). Raw codes are prepacked by the EP at session start
(`weights_prepacked=0`), so sessions must not disable prepacking. Unquantized MoE runs in every dtype."""

from __future__ import annotations

from mixtral_trt.common.contract import GraphContract

QMOE_CUDA_DTYPES = ("fp16", "bf16")
QMOE_CUDA_K_TILE = 64


def qmoe_cuda_problems(contract: GraphContract) -> list[str]:
    """Why the lowered graph's QMoE nodes cannot run on the CUDA EP (empty: they can, or there are none)."""
    if not contract.extra.get("quantization"):
        return []
    problems = []
    if contract.dtype not in QMOE_CUDA_DTYPES:
        problems.append(f"the export is {contract.dtype}; the CUDA QMoE kernels take {' or '.join(QMOE_CUDA_DTYPES)}")
    for what, size in (("hidden_size", contract.config.hidden_size),
                       ("intermediate_size", contract.config.intermediate_size)):
        if size % QMOE_CUDA_K_TILE:
            problems.append(f"{what} {size} is not a multiple of {QMOE_CUDA_K_TILE}")
    return problems
