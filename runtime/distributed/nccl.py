"""The NCCL communicator a TensorRT execution context runs its DistCollective layers on.

NCCL's C API through ctypes (docs.nvidia.com/deeplearning/nccl, "Communicator Creation"): rank 0 makes a
unique id (`ncclGetUniqueId`, 128 bytes), every rank reads it from the rendezvous store and calls
`ncclCommInitRank` on its own GPU. TensorRT's `IExecutionContext.set_communicator` takes the `ncclComm_t`;
from Python it is passed as a PyCapsule named "ncclComm_t" (as TensorRT's cookbook does with nccl4py).
Needs libnccl (>= 2.19, < 3: TensorRT's requirement) and a GPU; not executed on CPU machines.
"""

from __future__ import annotations

import ctypes
import os

from mixtral_trt.common.errors import MixtralTrtError

UNIQUE_ID_BYTES = 128


class UniqueId(ctypes.Structure):
    # unsigned bytes: a c_char array field reads as bytes cut at the first zero byte, and an NCCL id has
    # zeros right after its magic; read and write it whole through id_bytes / id_struct
    _fields_ = [("internal", ctypes.c_ubyte * UNIQUE_ID_BYTES)]


def id_bytes(uid: UniqueId) -> bytes:
    """All 128 bytes of the id, zeros included (what rank 0 shares with the others)."""
    return ctypes.string_at(ctypes.addressof(uid), UNIQUE_ID_BYTES)


def id_struct(data: bytes) -> UniqueId:
    """The id every rank passes to ncclCommInitRank, rebuilt from the shared bytes (length checked)."""
    if len(data) != UNIQUE_ID_BYTES:
        raise MixtralTrtError(f"NCCL unique id: {len(data)} bytes received from the rendezvous store, "
                              f"{UNIQUE_ID_BYTES} expected")
    return UniqueId.from_buffer_copy(data)


def _library() -> ctypes.CDLL:
    candidates = [os.environ.get("NCCL_LIBRARY", ""), "libnccl.so.2", "libnccl.so"]
    try:  # the nvidia-nccl wheel that CUDA builds of torch depend on
        import nvidia.nccl

        candidates.insert(1, os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))
    except ImportError:
        pass
    for name in filter(None, candidates):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise MixtralTrtError("NCCL is not installed (libnccl.so.2): tensor-parallel TensorRT engines need it "
                          "(NCCL >= 2.19; or set NCCL_LIBRARY)")


def _check(lib: ctypes.CDLL, result: int, what: str) -> None:
    if result != 0:
        lib.ncclGetErrorString.restype = ctypes.c_char_p
        raise MixtralTrtError(f"NCCL {what} failed: {lib.ncclGetErrorString(result).decode()}")


def unique_id() -> bytes:
    lib = _library()
    uid = UniqueId()
    _check(lib, lib.ncclGetUniqueId(ctypes.byref(uid)), "ncclGetUniqueId")
    return id_bytes(uid)


class Communicator:
    """An NCCL communicator of `world_size` ranks; this process is `rank` on the current CUDA device."""

    def __init__(self, world_size: int, rank: int, uid: bytes) -> None:
        self._lib = _library()
        self.ptr = ctypes.c_void_p()
        uid_struct = id_struct(uid)
        _check(self._lib, self._lib.ncclCommInitRank(ctypes.byref(self.ptr), world_size, uid_struct, rank),
               "ncclCommInitRank")

    def capsule(self) -> object:
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(self.ptr, b"ncclComm_t", None)

    def destroy(self) -> None:
        if self.ptr:
            self._lib.ncclCommDestroy(self.ptr)
            self.ptr = ctypes.c_void_p()
