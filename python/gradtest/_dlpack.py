"""DLPack leaves: arrays of any library that exposes ``__dlpack__`` and ``__dlpack_device__``.

A leaf on the CPU (``kDLCPU``) is read by :func:`numpy.from_dlpack` and checked as a NumPy array. A
leaf in CUDA memory is read here: the capsule's ``DLTensor`` gives the data pointer, dtype, shape
and strides, and the CUDA runtime of gradtest's device library copies the bytes to the host (the
ground truth runs on host copies, as for CuPy arrays). The capsule is not consumed: it is dropped
after the copy, and its destructor calls the producer's deleter, as the protocol says for a
capsule nobody renamed.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

# DLDeviceType values (dlpack.h)
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DEVICE_NAMES = {KDL_CPU: "CPU", KDL_CUDA: "CUDA", KDL_CUDA_HOST: "CUDA host", KDL_CUDA_MANAGED: "CUDA managed"}
# DLDataTypeCode values -> NumPy kind
_KINDS = {0: "i", 1: "u", 2: "f", 6: "b"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


def is_dlpack(obj: Any) -> bool:
    """Whether obj's type speaks the DLPack protocol (NumPy arrays excepted: they are leaves)."""
    kind = type(obj)
    return (not isinstance(obj, (np.ndarray, np.generic)) and hasattr(kind, "__dlpack__")
            and hasattr(kind, "__dlpack_device__"))


def device_of(obj: Any) -> tuple[int, int]:
    """``(device_type, device_id)`` from ``__dlpack_device__``."""
    device_type, device_id = obj.__dlpack_device__()
    return int(device_type), int(device_id)


def on_cuda(obj: Any) -> bool:
    """Whether a DLPack array lives in memory that needs the CUDA runtime to read."""
    return device_of(obj)[0] in (KDL_CUDA, KDL_CUDA_MANAGED)


def _header(capsule: Any) -> _DLTensor:
    # a legacy (unversioned) capsule holds a DLManagedTensor, whose first member is the DLTensor
    address = _get_pointer(capsule, b"dltensor")
    return _DLTensor.from_address(address)


def dtype_of(obj: Any) -> np.dtype | None:
    """The NumPy dtype of a DLPack array; None for one NumPy has no dtype for (bfloat16,
    vector lanes)."""
    if device_of(obj)[0] == KDL_CPU:
        try:
            return np.from_dlpack(obj).dtype
        except (TypeError, BufferError, RuntimeError):
            return None
    capsule = obj.__dlpack__()
    t = _header(capsule).dtype
    kind = _KINDS.get(t.code)
    if kind is None or t.lanes != 1 or t.bits % 8:
        return None
    try:
        return np.dtype(f"{kind}{t.bits // 8}") if kind != "b" else np.dtype(np.bool_)
    except TypeError:
        return None


def host_copy(obj: Any, library: Any = None) -> np.ndarray:
    """A host NumPy copy of a DLPack array: CPU memory through NumPy, CUDA memory through the
    device library's copy (``library``: a :class:`gradtest.cuda.DeviceLibrary`, default the
    CUDA build).

    Raises
    ------
    TypeError
        A dtype NumPy does not have.
    NotImplementedError
        Memory of another device (ROCm, Metal...), or a CUDA array that is not C-contiguous.
    RuntimeError
        A CUDA array where gradtest's device path is unavailable (the message says why).
    """
    device_type, _ = device_of(obj)
    if device_type == KDL_CPU:
        return np.array(np.from_dlpack(obj), copy=True)
    if device_type not in (KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED):
        raise NotImplementedError(f"DLPack arrays on device type {device_type} (gradtest reads CPU and CUDA "
                                  "memory)")
    dtype = dtype_of(obj)
    if dtype is None:
        raise TypeError(f"a DLPack array of a dtype NumPy does not have ({type(obj).__name__})")
    capsule = obj.__dlpack__()  # held until the copy is done: the producer keeps the memory alive
    t = _header(capsule)
    shape = tuple(t.shape[d] for d in range(t.ndim))
    out = np.empty(shape, dtype)
    if t.strides:
        strides = tuple(t.strides[d] * dtype.itemsize for d in range(t.ndim))
        if any(s != c for s, c, n in zip(strides, out.strides, shape) if n > 1):
            raise NotImplementedError("a DLPack array in CUDA memory that is not C-contiguous (copy it first)")
    if out.nbytes:
        from . import cuda

        lib = library or cuda.device_library()
        lib.check(lib.memcpy_sync(None, out.ctypes.data, (t.data or 0) + t.byte_offset, out.nbytes, 0),
                  "copy of a DLPack array to the host")
    del capsule
    return out
