"""mixtral_trt.plugins: the sparse-dispatch kernels and their TensorRT plugins, one folder per plugin.

    MoERouter -> MoEAlign -> MoEGemmSwiGLU -> MoEGemmDown (+ sum over k)
    (MoEGemmSwiGLUQ / MoEGemmDownQ for weight-only int8 / int4 experts; MoEGemmSwiGLUQZ / MoEGemmDownQZ for a
    quantized checkpoint's codes with zero points and act-order; MoEGemmSwiGLUF8 / MoEGemmDownF8 for FP8 e4m3
    experts)

Importing this package (or `PLUGINS`) loads only the specs; Triton and TensorRT are imported by the
kernels, the AOT compiler and the registrations when they are used.
"""

from .moe_align import SPEC as MOE_ALIGN
from .moe_gemm_down import SPEC as MOE_GEMM_DOWN
from .moe_gemm_down_f8 import SPEC as MOE_GEMM_DOWN_F8
from .moe_gemm_down_q import SPEC as MOE_GEMM_DOWN_Q
from .moe_gemm_down_qz import SPEC as MOE_GEMM_DOWN_QZ
from .moe_gemm_swiglu import SPEC as MOE_GEMM_SWIGLU
from .moe_gemm_swiglu_f8 import SPEC as MOE_GEMM_SWIGLU_F8
from .moe_gemm_swiglu_q import SPEC as MOE_GEMM_SWIGLU_Q
from .moe_gemm_swiglu_qz import SPEC as MOE_GEMM_SWIGLU_QZ
from .moe_router import SPEC as MOE_ROUTER
from .spec import NAMESPACE, VERSION, PluginSpec

PLUGINS: dict[str, PluginSpec] = {s.name: s for s in (MOE_ROUTER, MOE_ALIGN, MOE_GEMM_SWIGLU, MOE_GEMM_DOWN,
                                                      MOE_GEMM_SWIGLU_Q, MOE_GEMM_DOWN_Q, MOE_GEMM_SWIGLU_QZ,
                                                      MOE_GEMM_DOWN_QZ, MOE_GEMM_SWIGLU_F8, MOE_GEMM_DOWN_F8)}

__all__ = ["MOE_ALIGN", "MOE_GEMM_DOWN", "MOE_GEMM_DOWN_F8", "MOE_GEMM_DOWN_Q", "MOE_GEMM_DOWN_QZ", "MOE_GEMM_SWIGLU",
           "MOE_GEMM_SWIGLU_F8", "MOE_GEMM_SWIGLU_Q", "MOE_GEMM_SWIGLU_QZ", "MOE_ROUTER", "NAMESPACE", "PLUGINS",
           "VERSION", "PluginSpec"]
