"""`mixtral-export device-check` (also `python -m mixtral_trt.bench.device_check` from a plain checkout, and
`make device-check`): the GPU half of the plugins, checked on a bare CUDA machine without TensorRT, pip or a
network, in at most ~6 minutes, writing OUT/device_check.json (+ a PNG) after every phase:

1. environment and ceilings (`ceilings.py`): GPU, driver, versions; device-to-device copy bandwidth and bf16
   matmul throughput, measured (the floors of phase 4);
2. every plugin kernel and variant, compiled, against its torch reference (`kernels.py`);
3. TensorRT's launch contract without TensorRT (`contract.py`): the PTX and launch parameters TensorRT's plugin
   layer gave on a CPU machine (`make device-check-launches`, tests/support/launch_record.py) loaded through the
   CUDA driver (`driver.py`) and launched in TensorRT's argument order; each registration's `aot_impl` through a
   minimal stand-in of `tensorrt.plugin` (`trt_standin.py`) on this machine's driver;
4. the plugin chain as the model (`chain.py`): the `small` preset in bf16 with the chain behind the reference's
   MoE ops (logits, 32 greedy tokens); one Mixtral-8x7B-shaped MoE layer timed against its floors.

Without CUDA every phase runs what it can on CPU stand-ins (the Triton interpreter at tiny shapes: `--cpu-smoke`,
automatic) and the report says so (`cpu_stand_ins`). Imports only what such a machine has: the standard library,
torch, triton, numpy, safetensors (and matplotlib when present); see tests/bench/test_device_check.py.
"""

from .run import PHASES, run_device_check

__all__ = ["PHASES", "run_device_check"]
