"""The device path: gradtest's CUDA kernels, and :class:`CudaKernel` for checking device kernels.

Nothing here loads at ``import gradtest``: the CUDA library (``libgradtest_cuda.so``, built by
setup.py when nvcc is found, see ``docs/cuda.rst``) is opened the first time the device path is
asked for, so every CPU feature works on a machine with no GPU, no driver and no toolkit.
:func:`available` says whether the device path can run here and :func:`unavailable_reason` says
why not.

The same kernel sources also build as plain C over host memory (``csrc/cuda/emulation.c``): a
:class:`DeviceLibrary` opened on that build has ``emulated`` True. The tests run every kernel and
every host-side driver through it where there is no GPU. It is a test harness, never GPU support:
:func:`available` only ever reports the device build with a visible device.
"""

from __future__ import annotations

import ctypes
import functools
import io
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._finite_diff import GroundTruth, GroundTruthError, step_scale
from .ckernel import KernelCrash, KernelError, KernelLoadError, KernelTimeout, _KernelOutputs

LIBRARY_NAME = "libgradtest_cuda.so"
# the memory one batch of perturbed points may take on the device, by default
DEFAULT_BATCH_BYTES = 256 << 20
MAX_BATCH = 1 << 16

# gt_status codes of the core (gt_common.h) that the drivers return
_GT_OK, _GT_ENOMEM, _GT_EINVAL, _GT_ECALLBACK = 0, 1, 2, 3
_METHODS = {"central": 0, "forward": 1, "backward": 2}
_DTYPES = {np.dtype(np.float64): 0, np.dtype(np.float32): 1}

_size_t, _ll, _vp, _int, _dbl = ctypes.c_size_t, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
GTD_MAXDIM = 16


class Layout(ctypes.Structure):
    """``gtd_layout`` (gt_device.h): an output shape and each operand's element strides."""

    _fields_ = [("ndim", _int), ("shape", _ll * GTD_MAXDIM), ("sa", _ll * GTD_MAXDIM),
                ("sb", _ll * GTD_MAXDIM)]


class _FdKernel(ctypes.Structure):
    _fields_ = [("fn", _vp), ("ctx", _vp), ("stream", _vp), ("dtype", _int), ("n", _size_t),
                ("batch", _size_t), ("scale", ctypes.POINTER(_dbl)), ("m", _size_t), ("u", ctypes.POINTER(_dbl))]


class _FdStats(ctypes.Structure):
    _fields_ = [("evaluations", _size_t), ("launches", _size_t), ("rounds", _size_t),
                ("nonfinite", _size_t), ("cuda_status", _int)]


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "gtd_ew_value": (_int, [_vp, _int, _int, _size_t, ctypes.POINTER(Layout), _vp, _vp, _vp]),
    "gtd_ew_vjp": (_int, [_vp, _int, _int, _int, _size_t, ctypes.POINTER(Layout), _vp, _vp, _vp, _vp, _vp,
                          _int]),
    "gtd_unbroadcast": (_int, [_vp, _int, _size_t, _size_t, ctypes.POINTER(Layout), _vp, _vp, _int, _vp, _size_t]),
    "gtd_gather": (_int, [_vp, _int, _size_t, _vp, _vp, _vp]),
    "gtd_scatter_add": (_int, [_vp, _int, _size_t, _vp, _vp, _vp]),
    "gtd_cumsum": (_int, [_vp, _int, _size_t, _size_t, _size_t, _vp, _vp, _int, _int]),
    "gtd_copy": (_int, [_vp, _int, _size_t, _vp, _vp, _int]),
    "gtd_fill": (_int, [_vp, _int, _size_t, _dbl, _vp]),
    "gtd_fd_points": (_int, [_vp, _int, _size_t, _size_t, _vp, _vp, _vp, _vp]),
    "gtd_malloc": (_int, [_size_t, ctypes.POINTER(_vp)]),
    "gtd_free": (_int, [_vp]),
    "gtd_memcpy_sync": (_int, [_vp, _vp, _vp, _size_t, _int]),
    "gtd_stream_synchronize": (_int, [_vp]),
    "gtd_device_count": (_int, [ctypes.POINTER(_int)]),
    "gtd_error_string": (ctypes.c_char_p, [_int]),
    "gtd_is_device_build": (_int, []),
    "gtd_fd_batched": (_int, [ctypes.POINTER(_FdKernel), _vp, _int, _int, _dbl, ctypes.POINTER(_dbl), _vp,
                              _vp, ctypes.POINTER(_FdStats)]),
    "gtd_call_gradient": (_int, [_vp, _vp, _vp, _int, _size_t, _vp, _vp, ctypes.POINTER(_int)]),
    "gtd_call_vjp": (_int, [_vp, _vp, _vp, _int, _size_t, _vp, _size_t, _vp, _vp, ctypes.POINTER(_int)]),
    "gtd_batched_dot": (_int, [_vp, _int, _size_t, _size_t, _vp, _vp, _vp]),
}


# gradtest_device_scalar_f64/_f32 and _vector_ (gradtest.h), called through a pointer
_SCALAR_FN = ctypes.CFUNCTYPE(_int, _vp, _vp, _size_t, _size_t, _vp, _vp)
_VECTOR_FN = ctypes.CFUNCTYPE(_int, _vp, _vp, _size_t, _size_t, _vp, _size_t, _vp)


class DeviceError(RuntimeError):
    """A CUDA call or one of gradtest's device kernels failed; the message has the CUDA error
    string."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class DeviceLibrary:
    """The C interface of gradtest's device kernels (``csrc/cuda/gt_device.h``) in one loaded
    shared library: the nvcc build, or the CPU emulation of the same sources (tests only).

    Every call releases the GIL (ctypes does). Launchers enqueue on the stream they are given.

    Parameters
    ----------
    path : str or Path
        The shared library.

    Raises
    ------
    KernelLoadError
        The library does not load or lacks a symbol.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            self._lib = ctypes.CDLL(self.path)
        except OSError as exc:
            raise KernelLoadError(f"cannot load the CUDA library {self.path}: {exc}") from None
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(self._lib, name)
            except AttributeError:
                raise KernelLoadError(f"{self.path}: missing symbol {name}") from None
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name[4:], fn)
        #: True for the CPU emulation: "device" memory is host memory, launches are loops
        self.emulated = not self.is_device_build()

    def __repr__(self) -> str:
        return f"DeviceLibrary({self.path!r}, {'CPU emulation' if self.emulated else 'CUDA'})"

    def describe(self, code: int) -> str:
        """The CUDA error string of a code a launcher or a kernel returned."""
        text = self.error_string(int(code))
        return text.decode(errors="replace") if text else f"error {code}"

    def check(self, code: int, what: str) -> None:
        """Raises :class:`DeviceError` naming ``what`` when ``code`` is not 0."""
        if code:
            raise DeviceError(f"{what}: CUDA error {code}: {self.describe(code)}", code)


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[DeviceLibrary | None, str | None]:
    path = Path(__file__).with_name(LIBRARY_NAME)
    if not path.exists():
        return None, (f"gradtest was built without its CUDA library ({LIBRARY_NAME} is not installed: "
                      "nvcc was not found at build time, or GRADTEST_CUDA=0)")
    try:
        lib = DeviceLibrary(path)
    except KernelLoadError as exc:
        return None, str(exc)
    if lib.emulated:
        return None, f"{path} is the CPU emulation build, not a CUDA build"
    count = _int(0)
    code = lib.device_count(ctypes.byref(count))
    if code:
        driver = _driver_missing()
        if driver is not None:  # what cudaGetDeviceCount says then (error 35) does not name the cause
            return None, (f"no NVIDIA driver: {driver} (cudaGetDeviceCount returned {code}: "
                          f"{lib.describe(code)})")
        return None, f"no usable CUDA device: {lib.describe(code)} (cudaGetDeviceCount returned {code})"
    if count.value == 0:
        return None, "no CUDA device is visible (cudaGetDeviceCount found 0)"
    return lib, None


def _driver_missing() -> str | None:
    """Why the NVIDIA driver's library does not load, or None when it does. The CUDA runtime
    reports a missing driver as "CUDA driver version is insufficient for CUDA runtime version"
    (cudaErrorInsufficientDriver), the same words as for an old driver."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return f"libcuda.so.1 does not load ({exc})"
    return None


def available() -> bool:
    """True when the device path can run here: the CUDA library was built and loads, the driver
    works and at least one device is visible. Never raises."""
    return _probe()[0] is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (a sentence naming the CUDA error where there is one), or
    None when it is True."""
    return _probe()[1]


def device_library() -> DeviceLibrary:
    """The loaded CUDA library.

    Raises
    ------
    RuntimeError
        The device path is unavailable; the message says why.
    """
    lib, reason = _probe()
    if lib is None:
        raise RuntimeError(f"the gradtest device path is unavailable: {reason}")
    return lib


def _address(obj: Any, role: str, default_library: str | None) -> tuple[int, str, str | None]:
    """(address, name, library path) of a function given as an int, a ctypes function pointer,
    ``"lib.so:symbol"`` or (for derivatives) a bare symbol of f's library."""
    if isinstance(obj, bool):
        raise TypeError(f"{role}: expected a function reference, got {obj!r}")
    if isinstance(obj, int):
        if obj == 0:
            raise ValueError(f"{role}: NULL function pointer")
        return obj, f"{role}@{obj:#x}", None
    if isinstance(obj, ctypes._CFuncPtr):
        address = ctypes.cast(obj, _vp).value or 0
        if not address:
            raise ValueError(f"{role}: NULL function pointer")
        return address, getattr(obj, "__name__", role), None
    if isinstance(obj, str):
        path, sep, symbol = obj.rpartition(":")
        if not sep:
            if default_library is None:
                raise ValueError(f"{role}: expected 'path/to/lib.so:symbol', got {obj!r}")
            path, symbol = default_library, obj
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise KernelLoadError(f"{role}: cannot load {path}: {exc}") from None
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            raise KernelLoadError(f"{role}: {path} has no symbol {symbol!r}") from None
        return ctypes.cast(fn, _vp).value or 0, symbol, path
    raise TypeError(f"{role}: expected an int address, a ctypes function pointer or 'lib.so:symbol', "
                    f"got {type(obj).__name__}")


def host_copy(x: Any, library: DeviceLibrary | None = None) -> np.ndarray:
    """A host NumPy copy of x: a NumPy array, or a contiguous device array exposing
    ``__cuda_array_interface__`` (CuPy, PyTorch CUDA, Numba), copied with the CUDA runtime.

    Raises
    ------
    TypeError
        x is neither.
    NotImplementedError
        A device array that is not C-contiguous.
    """
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise TypeError(f"x: expected a numpy.ndarray or a device array (__cuda_array_interface__), "
                        f"got {type(x).__name__}")
    dtype = np.dtype(cai["typestr"])
    shape = tuple(cai["shape"])
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != np.empty(shape, dtype).strides:
        raise NotImplementedError(
            "gradtest.cuda.host_copy: a device array that is not C-contiguous (copy it first)")
    out = np.empty(shape, dtype)
    lib = library or device_library()
    if out.nbytes:
        # version 3 of the interface: the producer names the stream its data is ready on (1 is
        # the legacy default stream, 2 the per-thread one), and the consumer synchronizes it
        # before reading; the copy below runs on the legacy default stream, which a
        # non-blocking stream does not wait for
        stream = cai.get("stream")
        if isinstance(stream, int) and not isinstance(stream, bool) and stream:
            lib.check(lib.stream_synchronize(stream), "synchronizing the array's stream")
        lib.check(lib.memcpy_sync(None, out.ctypes.data, cai["data"][0], out.nbytes, 0), "copy to the host")
    return out


class CudaKernel(_KernelOutputs):
    """A device kernel written against the device section of ``gradtest.h``, checked with batched
    finite differences: the CUDA counterpart of :class:`gradtest.CKernel`.

    The ground truth uses the CPU engine's own step and error-bound rules (``csrc/core/fd.c``):
    the driver runs that engine component by component and evaluates the points it asks for in
    batches, each batch built on the device and evaluated in one launch of f (see
    ``csrc/cuda/fd_batch.h``). f(x) and the noise estimate take one launch per point.

    Parameters
    ----------
    f : function reference
        ``gradtest_device_scalar_f64`` (or ``_f32`` with ``dtype="float32"``): a ctypes function
        pointer, an integer address or ``"path/to/lib.so:symbol"``.
    gradient : function reference, optional
        ``gradtest_device_gradient_f64``/``_f32``, checked as backend ``"user"``; a bare symbol is
        looked up in f's library. Scalar functions only.
    vjp : function reference, optional
        ``gradtest_device_vjp_f64``/``_f32`` of a vector function (``n_out`` given), checked as
        backend ``"user_vjp"`` through the fixed random cotangent u (as :class:`gradtest.CKernel`).
    n_out : int or callable, optional
        The number of outputs m of a vector function (``gradtest_device_vector_f64``), or a
        function of n giving it; None: f is a scalar function.
    ctx : int, optional
        The opaque pointer passed to every call (an address; None for NULL).
    dtype : {"float64", "float32"}
        The element type of the kernel's arrays.
    batch : int, optional
        The most points one launch of f evaluates; default: as many as fit in 256 MiB.
    stream : int, optional
        The cudaStream_t to launch on (an address); default the legacy default stream.
    library : DeviceLibrary, optional
        The kernels' library; default the CUDA build (:func:`device_library`). The tests pass
        the CPU emulation build, with host functions of the same ABI as kernels.
    name : str, optional
        A name for reports.
    isolate : bool
        Run the check's stages in a spawned child process (a fresh interpreter with its own CUDA
        context, since a CUDA context does not survive ``fork``): a segfault, an abort, an exit or
        a hang of the kernel becomes a :class:`gradtest.ckernel.KernelCrash` (or
        :class:`~gradtest.ckernel.KernelTimeout`) naming the signal and the stage, and a fault
        that leaves the device context unusable leaves it so only in the child. Host copies of x
        go in, the results come back. It needs every function given as ``"lib.so:symbol"`` and no
        ``ctx`` or ``stream`` (addresses of this process). Default False: the child's start (an
        interpreter, NumPy, a CUDA context) costs about a second. ``check_gradients(...,
        isolate=)`` overrides it for one check. It applies to checks (``check_gradients``,
        ``test_gradients``); the methods below always run in this process.
    timeout : float, optional
        Seconds an isolated check may take before the child is killed; None: no limit.

    Raises
    ------
    RuntimeError
        No library was given and the device path is unavailable (the message says why).
    KernelLoadError, ValueError, TypeError
        A function reference that does not resolve, a NULL pointer, a bad dtype or batch, or
        ``isolate=True`` with a reference a child process cannot resolve.
    """

    __gradtest_backends__: tuple[str, ...]

    def __init__(self, f: Any, *, gradient: Any = None, vjp: Any = None, n_out: Any = None,
                 ctx: int | None = None, dtype: str | np.dtype = "float64", batch: int | None = None,
                 stream: int | None = None, library: DeviceLibrary | None = None, name: str | None = None,
                 isolate: bool = False, timeout: float | None = None) -> None:
        if f is None:
            raise ValueError("f: NULL function pointer (f is required)")
        if n_out is not None and not callable(n_out):
            if isinstance(n_out, bool) or not isinstance(n_out, (int, np.integer)) or n_out < 1:
                raise ValueError(f"n_out: expected an integer >= 1, a function of n or None, got {n_out!r}")
            n_out = int(n_out)
        if n_out is not None and gradient is not None:
            raise ValueError("gradient: applies to scalar functions (n_out=None); check a vector function "
                             "through vjp=")
        if n_out is None and vjp is not None:
            raise ValueError("vjp: applies to vector functions; give n_out (a scalar function's check "
                             "takes gradient=)")
        self.n_out = n_out
        self._lib = library if library is not None else device_library()
        self._f, fname, flib = _address(f, "f", None)
        # where each function comes from, for a child process: (library path, symbol), or None
        # for an address, which only this process can call
        self._refs: dict[str, tuple[str, str] | None] = {"f": (flib, fname) if flib else None}
        self._gradient, self._gradient_name = 0, "gradient"
        if gradient is not None:
            self._gradient, self._gradient_name, glib = _address(gradient, "gradient", flib)
            self._refs["gradient"] = (glib, self._gradient_name) if glib else None
        self._vjp, self._vjp_name = 0, "vjp"
        if vjp is not None:
            self._vjp, self._vjp_name, vlib = _address(vjp, "vjp", flib)
            self._refs["vjp"] = (vlib, self._vjp_name) if vlib else None
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}") from None
        if dt not in _DTYPES:
            raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
        self.dtype = dt
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
                                  or batch < 1):
            raise ValueError(f"batch: expected an integer >= 1 or None, got {batch!r}")
        self.batch = None if batch is None else int(batch)
        self._ctx = int(ctx or 0)
        self._stream = int(stream or 0)
        self.name = name or fname
        _check_isolate(isolate, timeout)
        if isolate:
            self._isolation_refused()
        self.isolate, self.timeout = bool(isolate), None if timeout is None else float(timeout)
        self.__gradtest_backends__ = (("user",) if self._gradient else ()) + (("user_vjp",) if self._vjp else ())

    def __repr__(self) -> str:
        where = "CPU emulation" if self._lib.emulated else "CUDA"
        return f"CudaKernel({self.name!r}, dtype={self.dtype.name}, {where}, backends={self.__gradtest_backends__})"

    def _flat(self, x: Any) -> np.ndarray:
        host = host_copy(x, self._lib)
        if host.dtype != self.dtype:
            raise TypeError(f"x: expected {self.dtype.name} (the kernel's dtype), got {host.dtype}")
        if host.size == 0:
            raise ValueError("x: expected at least one element, got an empty array")
        return np.ascontiguousarray(host).reshape(-1)

    def __call__(self, x: Any) -> float | np.ndarray:
        """f at x (a host or device array), one launch on a device copy: a float for a scalar
        function, m values (host, the kernel's dtype) for a vector one.

        Raises
        ------
        KernelError
            f returned non-zero or a CUDA call failed.
        """
        flat = self._flat(x)
        lib = self._lib
        m = self._m(flat.size)
        dx, df = _vp(), _vp()
        out = np.full(max(m, 1), np.nan, self.dtype)
        try:
            code = lib.malloc(flat.nbytes, ctypes.byref(dx)) or lib.malloc(out.nbytes, ctypes.byref(df))
            if not code:
                code = lib.memcpy_sync(self._stream or None, dx, flat.ctypes.data, flat.nbytes, 1)
            if not code and m:
                code = _VECTOR_FN(self._f)(self._ctx or None, self._stream or None, 1, flat.size, dx, m, df)
            elif not code:
                code = _SCALAR_FN(self._f)(self._ctx or None, self._stream or None, 1, flat.size, dx, df)
            if not code:
                code = lib.memcpy_sync(self._stream or None, out.ctypes.data, df, out.nbytes, 0)
        finally:
            lib.free(dx)
            lib.free(df)
        if code:
            self._raise(_GT_ECALLBACK, code, "function")
        return out if m else float(out[0])

    def batch_size(self, n: int, m: int = 0) -> int:
        """The number of points one launch evaluates for n inputs (and m outputs)."""
        if self.batch is not None:
            return self.batch
        per_point = (n + m) * self.dtype.itemsize
        return int(max(1, min(MAX_BATCH, 2 * n, DEFAULT_BATCH_BYTES // per_point)))

    def _cotangent_checked(self, n: int, u: np.ndarray | None) -> np.ndarray | None:
        m = self._m(n)
        if m == 0:
            return None
        u = self.cotangent(n) if u is None else np.ascontiguousarray(u, dtype=np.float64).reshape(-1)
        if u.size != m:
            raise ValueError(f"u: expected {m} elements (the kernel's outputs), got {u.size}")
        return u

    def vjp(self, x: Any, u: np.ndarray | None = None) -> np.ndarray:
        """The kernel's own VJP at x with ybar = u (default :meth:`cotangent`), as a flat float64
        host array.

        Raises
        ------
        ValueError
            The kernel has no VJP function.
        KernelError
            It returned non-zero or a CUDA call failed.
        """
        if not self._vjp:
            raise ValueError("vjp: the kernel has no vjp function")
        flat = self._flat(x)
        u = self._cotangent_checked(flat.size, u)
        out = np.empty_like(flat)
        cuda_status = _int(0)
        status = self._lib.call_vjp(self._vjp, self._ctx or None, self._stream or None, _DTYPES[self.dtype],
                                    flat.size, flat.ctypes.data, u.size, u.ctypes.data, out.ctypes.data,
                                    ctypes.byref(cuda_status))
        self._raise(status, cuda_status.value, "vjp")
        return out.astype(np.float64)

    def finite_differences(self, x: Any, *, method: str = "central", richardson: bool = True,
                           rel_step: float = 0.0, u: np.ndarray | None = None) -> dict[str, Any]:
        """The batched finite-difference gradient of f at x (host or device array); of <u, f> for
        a vector function (u: default :meth:`cotangent` with seed 0).

        Returns
        -------
        dict
            ``value`` (f(x)), ``gradient``, ``errors`` (flat float64 arrays), ``evaluations``,
            ``launches``, ``rounds``, ``nonfinite`` and ``seconds``.

        Raises
        ------
        KernelError
            f returned non-zero or a CUDA call failed (the message has the CUDA error string).
        """
        if method not in _METHODS:
            raise ValueError(f"method: expected one of {tuple(_METHODS)}, got {method!r}")
        if not (rel_step >= 0):
            raise ValueError(f"rel_step: expected a number >= 0, got {rel_step!r}")
        flat = self._flat(x)
        n = flat.size
        m = self._m(n)
        u = self._cotangent_checked(n, u)
        scale = np.ascontiguousarray(step_scale(flat, [0, n]), dtype=np.float64)
        k = _FdKernel(self._f, self._ctx or None, self._stream or None, _DTYPES[self.dtype], n,
                      self.batch_size(n, m), scale.ctypes.data_as(ctypes.POINTER(_dbl)), m,
                      None if u is None else u.ctypes.data_as(ctypes.POINTER(_dbl)))
        grad, err = np.empty(n), np.empty(n)
        f0, stats = _dbl(math.nan), _FdStats()
        start = time.perf_counter()
        status = self._lib.fd_batched(ctypes.byref(k), flat.ctypes.data, _METHODS[method], int(bool(richardson)),
                                      float(rel_step), ctypes.byref(f0), grad.ctypes.data, err.ctypes.data,
                                      ctypes.byref(stats))
        seconds = time.perf_counter() - start
        self._raise(status, stats.cuda_status, "function")
        return dict(value=f0.value, gradient=grad, errors=err, evaluations=stats.evaluations,
                    launches=stats.launches, rounds=stats.rounds, nonfinite=stats.nonfinite, seconds=seconds)

    def gradient(self, x: Any) -> np.ndarray:
        """The kernel's own gradient at x, as a flat float64 host array.

        Raises
        ------
        ValueError
            The kernel has no gradient function.
        KernelError
            It returned non-zero or a CUDA call failed.
        """
        if not self._gradient:
            raise ValueError("gradient: the kernel has no gradient function")
        flat = self._flat(x)
        out = np.empty_like(flat)
        cuda_status = _int(0)
        status = self._lib.call_gradient(self._gradient, self._ctx or None, self._stream or None,
                                         _DTYPES[self.dtype], flat.size, flat.ctypes.data, out.ctypes.data,
                                         ctypes.byref(cuda_status))
        self._raise(status, cuda_status.value, "gradient")
        return out.astype(np.float64)

    def _raise(self, status: int, cuda_status: int, stage: str) -> None:
        if status == _GT_OK:
            return
        who = {"function": self.name, "gradient": self._gradient_name, "vjp": self._vjp_name}[stage]
        if cuda_status:
            raise KernelError(f"{who}: stage {stage!r}: CUDA error {cuda_status}: "
                              f"{self._lib.describe(cuda_status)}", stage=stage, status=cuda_status)
        if status == _GT_ENOMEM:
            raise MemoryError(f"{who}: stage {stage!r}: out of memory")
        raise KernelError(f"{who}: stage {stage!r}: the driver failed with status {status}", stage=stage,
                          status=status)

    def __gradtest_check__(self, args: tuple[Any, ...], settings: Any) -> tuple[Any, dict[str, Any]]:
        """The ground truth and the ``"user"`` gradient for check_gradients (see
        :meth:`gradtest.CKernel.__gradtest_check__`).

        Raises
        ------
        KernelError
            f itself failed, so there is no ground truth.
        """
        if len(args) != 1:
            raise TypeError(f"a CudaKernel takes exactly one argument x, got {len(args)}")
        (x,) = args
        extra = dict(getattr(settings, "extra", None) or {})
        unknown = sorted(set(extra) - {"isolate", "timeout"})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
                            "for a CUDA-kernel check (it takes isolate and timeout)")
        isolate = extra.get("isolate", self.isolate)
        timeout = extra.get("timeout", self.timeout)
        _check_isolate(isolate, timeout)
        fd = dict(getattr(settings, "fd_options", None) or {})
        method = fd.get("method", "central")
        richardson = bool(fd.get("richardson", True))
        shape = np.shape(x)
        n = int(np.prod(shape, dtype=np.int64))
        u = self.cotangent(n, int(fd.get("seed", 0) or 0))
        fd_args = dict(method=method, richardson=richardson, rel_step=float(fd.get("rel_step", 0.0) or 0.0), u=u)
        stages = [("finite_differences", fd_args)]
        stages += [("gradient", {})] if self._gradient else []
        stages += [("vjp", {"u": u})] if self._vjp else []
        flat = self._flat(x)
        if isolate:
            self._isolation_refused()
            done = self._run_isolated(flat, stages, timeout)
        else:
            done = _run_stages(self, flat, stages)
        truth = done["finite_differences"]
        if isinstance(truth, Exception):
            raise truth
        where = "the CPU emulation of the device (tests only)" if self._lib.emulated else "the device"
        notes = [f"CUDA kernel {self.name}: batched finite differences on {where}: "
                 f"{truth['evaluations']} evaluations in {truth['launches']} launches "
                 f"(batch {self.batch_size(n, self._m(n))}, {truth['rounds']} rounds), the CPU engine's rules"
                 + (", in a spawned child process" if isolate else "")]
        if u is not None:
            notes.append("vector function checked through a fixed random cotangent u: gradient of "
                         "<u, f(x)>, the VJP called with ybar = u")
        if truth["nonfinite"]:
            raise GroundTruthError(f"{self.name}: f returned non-finite values at {truth['nonfinite']} of "
                                   f"{n} perturbed points")
        if not np.isfinite(truth["value"]):
            raise GroundTruthError(f"{self.name}: f(x) is not finite ({truth['value']})")
        gt = GroundTruth(mode="full", gradients=[truth["gradient"].reshape(shape)],
                         errors=[truth["errors"].reshape(shape)],
                         method=method + ("+Richardson" if richardson else ""),
                         evaluations=truth["evaluations"], seconds=truth["seconds"], dtype=self.dtype,
                         notes=notes)
        results: dict[str, Any] = {}
        for stage, backend in (("gradient", "user"), ("vjp", "user_vjp")):
            if stage in done:
                value = done[stage]
                results[backend] = value if isinstance(value, Exception) else [value.reshape(shape)]
        return gt, results

    # -- isolation in a spawned child --------------------------------------------------------

    def _isolation_refused(self) -> None:
        """Raises ValueError when a child process could not call this kernel."""
        missing = [role for role, ref in self._refs.items() if ref is None]
        if missing:
            raise ValueError(f"isolate=True: {', '.join(missing)} given as an address; a child process "
                             "resolves functions by name, so give them as 'path/to/lib.so:symbol'")
        if self._ctx or self._stream:
            raise ValueError("isolate=True: ctx and stream are addresses in this process; a child process "
                             "cannot use them (isolate=False runs them here)")

    def _run_isolated(self, flat: np.ndarray, stages: list[tuple[str, dict[str, Any]]],
                      timeout: float | None) -> dict[str, Any]:
        """Runs the stages in a spawned interpreter (``python -c``, not multiprocessing, so the
        caller's __main__ is never re-imported) and returns each stage's result or exception. A
        stage the child did not finish is a KernelCrash (or KernelTimeout); the stages before it
        keep their results. The child is always reaped: none is left behind."""
        n = flat.size
        request = dict(library=self._lib.path, refs=self._refs, n_out=self._m(n) or None, dtype=self.dtype.name,
                       batch=self.batch, name=self.name, x=flat, stages=stages)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-c", "from gradtest.cuda import _isolated_child; _isolated_child()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        timed_out = False
        try:
            out, _ = proc.communicate(pickle.dumps(request), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            timed_out = True
        finally:
            if proc.poll() is None:  # an exception above (KeyboardInterrupt): no child left behind
                proc.kill()
                proc.wait()
        done: dict[str, Any] = {}
        current = stages[0][0]
        stream = io.BytesIO(out)
        while True:
            try:
                kind, stage, value = pickle.load(stream)
            except Exception:  # the end, or a record the crash cut short
                break
            if kind == "start":
                current = stage
            elif kind == "result":
                done[stage] = value
            elif kind == "error":
                done[stage] = _rebuild_error(value)
        missing = [stage for stage, _ in stages if stage not in done]
        if missing:
            done[current] = self._crash(current, proc.returncode, timed_out, timeout)
            for stage in missing:
                done.setdefault(stage, KernelCrash(f"{self.name}: stage {stage!r} did not run: the child process "
                                                   f"ended in stage {current!r}", stage=stage))
        return done

    def _crash(self, stage: str, returncode: int, timed_out: bool, timeout: float | None) -> KernelCrash:
        who = {"finite_differences": self.name, "function": self.name, "gradient": self._gradient_name,
               "vjp": self._vjp_name}.get(stage, self.name)
        if timed_out:
            return KernelTimeout(f"timed out after {timeout:g} s: {who} in stage {stage!r}; the child process "
                                 "was killed (SIGKILL)", stage=stage, limit=float(timeout or 0.0),
                                 signal=int(signal.SIGKILL), signal_name="SIGKILL")
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return KernelCrash(f"{who}: crashed with {name} in stage {stage!r} (in a spawned child process)",
                               stage=stage, signal=-returncode, signal_name=name)
        return KernelCrash(f"{who}: the child process exited with code {returncode} in stage {stage!r} without "
                           "reporting back (did the kernel call exit()?)", stage=stage, exit_code=returncode)


def _check_isolate(isolate: Any, timeout: Any) -> None:
    if not isinstance(isolate, (bool, np.bool_)):
        raise TypeError(f"isolate: expected True or False, got {isolate!r}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)) \
                or not (timeout > 0) or not math.isfinite(timeout):
            raise ValueError(f"timeout: expected seconds > 0 or None, got {timeout!r}")
        if not isolate:
            raise ValueError("timeout: needs isolate=True (an in-process kernel cannot be stopped)")


def _run_stages(kernel: CudaKernel, flat: np.ndarray, stages: list[tuple[str, dict[str, Any]]],
                report: Any = None) -> dict[str, Any]:
    """Each stage's result, or the KernelError it raised (the ground truth's stage raises a
    failure of f itself at once, in process; ``report(kind, stage, value)`` streams them)."""
    done: dict[str, Any] = {}
    for stage, kwargs in stages:
        if report is not None:
            report("start", stage, None)
        try:
            done[stage] = getattr(kernel, stage)(flat, **kwargs)
        except KernelError as exc:
            if stage == "finite_differences" and report is None:
                raise
            done[stage] = exc
        except Exception as exc:  # in a child: any failure goes back to the parent, named
            if report is None:
                raise
            done[stage] = exc
        if report is not None:
            value = done[stage]
            if isinstance(value, Exception):
                report("error", stage, (type(value).__name__, str(value), getattr(value, "stage", stage),
                                        getattr(value, "status", 0)))
            else:
                report("result", stage, value)
    return done


def _rebuild_error(record: tuple[str, str, str, int]) -> Exception:
    kind, message, stage, status = record
    if kind == "MemoryError":
        return MemoryError(message)
    if kind != "KernelError":
        message = f"{kind}: {message}"
    return KernelError(message, stage=stage, status=status)


def _isolated_child() -> None:
    """The spawned child of an isolated check: reads the request from stdin, runs the stages and
    streams one pickled record per event on what was stdout (the kernel's own prints go to
    stderr instead)."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash the parent reports needs no core file
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    request = pickle.load(sys.stdin.buffer)
    refs = request["refs"]

    def ref(role: str) -> str | None:
        entry = refs.get(role)
        return None if entry is None else f"{entry[0]}:{entry[1]}"

    def report(kind: str, stage: str, value: Any) -> None:
        pickle.dump((kind, stage, value), results)
        results.flush()  # what a crash cannot take back

    try:
        kernel = CudaKernel(ref("f"), gradient=ref("gradient"), vjp=ref("vjp"), n_out=request["n_out"],
                            dtype=request["dtype"], batch=request["batch"], name=request["name"],
                            library=DeviceLibrary(request["library"]))
    except Exception as exc:
        report("start", request["stages"][0][0], None)
        report("error", request["stages"][0][0], ("KernelError", f"the child process could not load the kernel: "
                                                  f"{type(exc).__name__}: {exc}", request["stages"][0][0], 0))
        return
    _run_stages(kernel, request["x"], request["stages"], report)
    results.close()
