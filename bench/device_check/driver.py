"""The CUDA driver API through ctypes (libcuda.so.1, which every NVIDIA driver installs): load a PTX module with
cuModuleLoadData (the driver compiles it for the GPU, as TensorRT does with an AOT plugin's PTX) and launch its
kernel with cuLaunchKernel, arguments in TensorRT's order: input pointers, int32 scalars, output pointers.
Runs in the primary context torch made current; on torch's current stream."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from mixtral_trt.common.errors import MixtralTrtError

CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3
DEFAULT_SHARED = 48 * 1024  # dynamic shared memory a launch may use without the opt-in attribute


class DriverError(RuntimeError):
    pass


class Driver:
    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise MixtralTrtError(f"the CUDA driver (libcuda.so.1) cannot be loaded: {e}") from None

    def _call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorString(status, ctypes.byref(text))
            raise DriverError(f"{name}: CUDA error {status} ({(text.value or b'?').decode()})")

    def version(self) -> int:
        v = ctypes.c_int()
        self._call("cuDriverGetVersion", ctypes.byref(v))
        return v.value

    def load(self, ptx: str | bytes, symbol: str) -> Kernel:
        """The kernel `symbol` of a PTX text, compiled by the driver for the current GPU."""
        data = ptx.encode() if isinstance(ptx, str) else ptx
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        self._call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(data + b"\0"))
        self._call("cuModuleGetFunction", ctypes.byref(function), module, symbol.encode())
        return Kernel(self, module, function, symbol)


class Kernel:
    def __init__(self, driver: Driver, module, function, symbol: str) -> None:
        self.driver, self.module, self.function, self.symbol = driver, module, function, symbol

    def attribute(self, attribute: int) -> int:
        v = ctypes.c_int()
        self.driver._call("cuFuncGetAttribute", ctypes.byref(v), attribute, self.function)
        return v.value

    def launch(self, grid: Sequence[int], block: Sequence[int], shared: int, pointers_in: Sequence[int],
               scalars: Sequence[int], pointers_out: Sequence[int], stream: int = 0) -> None:
        """cuLaunchKernel with (inputs, int32 scalars, outputs) as the kernel's parameters, in that order."""
        if shared > DEFAULT_SHARED:
            self.driver._call("cuFuncSetAttribute", self.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                              ctypes.c_int(shared))
        values = [ctypes.c_void_p(p) for p in pointers_in] + [ctypes.c_int32(s) for s in scalars] + \
            [ctypes.c_void_p(p) for p in pointers_out]
        params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        gx, gy, gz = (list(grid) + [1, 1])[:3]
        bx, by, bz = (list(block) + [1, 1])[:3]
        self.driver._call("cuLaunchKernel", self.function, ctypes.c_uint(gx), ctypes.c_uint(gy), ctypes.c_uint(gz),
                          ctypes.c_uint(bx), ctypes.c_uint(by), ctypes.c_uint(bz), ctypes.c_uint(shared),
                          ctypes.c_void_p(stream), params, ctypes.c_void_p(0))

    def unload(self) -> None:
        self.driver._call("cuModuleUnload", self.module)
