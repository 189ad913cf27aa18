"""The plugin kernels run under Triton's interpreter: TRITON_INTERPRET=1 before triton is imported."""

from mixtral_trt.plugins.interpreter import require_interpreter

require_interpreter()
