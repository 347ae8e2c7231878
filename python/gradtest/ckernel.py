"""Native C kernels: finite differences computed in C, with crash isolation.

A :class:`CKernel` wraps the functions of a kernel written against the C ABI of ``gradtest.h``
(:func:`get_include` gives its folder). Passed to :func:`gradtest.check_gradients` or
:func:`gradtest.test_gradients` with a NumPy array, the kernel's own derivative functions are
checked against finite differences that the C core computes by calling the kernel directly,
with the GIL released: no Python call per evaluation.

Each stage of a check (``function``: f under finite differences; ``gradient``; ``vjp``; ``jvp``)
runs by default in a forked child process (``isolate=True``), so that a segfault, an abort, a
floating-point trap or a hang becomes an error outcome naming the signal and the stage instead of
ending the test run. Every stage has a time limit, by default derived from the measured cost of one
evaluation of f (see :func:`default_time_limit`); Ctrl-C stops the child and raises
``KeyboardInterrupt``; a child never outlives its parent. Every buffer handed to the kernel ends
against an inaccessible guard page, with canary bytes on its other side, so that a write past
the end of an output is reported (:class:`KernelOverrun`) instead of corrupting memory. Isolation
costs one ``fork`` per stage (about a millisecond
for a typical Python process, more for one with a large heap) plus copying the n-element results
through a pipe.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import _ckernel
from ._finite_diff import GroundTruth, GroundTruthError, step_scale

__all__ = [
    "CKernel",
    "KernelCrash",
    "KernelError",
    "KernelLoadError",
    "KernelOverrun",
    "KernelTimeout",
    "default_time_limit",
    "get_include",
]

_CODES = _ckernel.status_codes()
_STAGES = {"function": 0, "gradient": 1, "vjp": 2, "jvp": 3, "evaluate": 4}
_METHODS = {"central": 0, "forward": 1, "backward": 2}
# backend name -> the stage that computes it
BACKEND_STAGES = {"user": "gradient", "user_vjp": "vjp", "user_jvp": "jvp"}
# the options a C-kernel check takes beyond the finite-difference ones
EXTRA_OPTIONS = ("isolate", "timeout", "threads")

#: The default time limit of an isolated stage (``timeout="auto"``): SAFETY_FACTOR times the
#: measured cost of one evaluation of f times the calls the stage makes, and never under
#: MIN_TIME_LIMIT seconds. The evaluation that measures the cost has PROBE_TIME_LIMIT seconds.
SAFETY_FACTOR = 100.0
MIN_TIME_LIMIT = 10.0
PROBE_TIME_LIMIT = 60.0
# a derivative call counted in calls of f: the cheap-gradient principle puts a reverse sweep at a
# few evaluations, a forward one at about two; generous, the limit is there to stop hangs
_DERIVATIVE_COST = {"gradient": 5, "vjp": 5, "jvp": 3}


def default_time_limit(stage: str, n: int, eval_seconds: float, evals_per_component: int = 4) -> float:
    """The default time limit, in seconds, of an isolated stage of a C-kernel check.

    ``max(MIN_TIME_LIMIT, SAFETY_FACTOR * eval_seconds * calls)``, where ``calls`` counts the
    stage's kernel calls in evaluations of f: ``1 + n * evals_per_component`` for the finite
    differences (``'function'``), 5 for a gradient or a VJP, ``3 n`` for the JVP sweep.

    Parameters
    ----------
    stage : {'function', 'gradient', 'vjp', 'jvp', 'evaluate'}
    n : int
        The number of inputs.
    eval_seconds : float
        The measured duration of one call of f at x.
    evals_per_component : int
        Evaluations of f per component of the finite differences (4 for central differences
        with Richardson extrapolation).
    """
    if stage == "evaluate":
        return PROBE_TIME_LIMIT
    if stage == "function":
        calls = 1 + n * evals_per_component
    else:
        calls = _DERIVATIVE_COST[stage] * (n if stage == "jvp" else 1)
    return max(MIN_TIME_LIMIT, SAFETY_FACTOR * max(eval_seconds, 0.0) * calls)


def _evals_per_component(method: str, richardson: bool, rel_step: float) -> int:
    """Calls of f per component the finite differences plan for: the classic rule's count, or
    for the adaptive one (a varying number of halving steps) a generous 24 steps."""
    per_step = 2 if method == "central" else 1
    if richardson and not rel_step > 0:
        return 24 * per_step
    return per_step * (2 if richardson else 1)


def get_include() -> str:
    """Returns the folder holding ``gradtest.h``, the C ABI of kernels (for ``-I``)."""
    return str(Path(__file__).resolve().parent / "include")


class KernelLoadError(OSError):
    """A kernel's library could not be loaded, or a symbol was not found in it."""


class KernelError(RuntimeError):
    """A kernel function returned a non-zero status.

    Attributes
    ----------
    stage : str
        The stage that ran: ``'function'``, ``'gradient'``, ``'vjp'`` or ``'jvp'``.
    status : int
        The status the kernel returned (0 for crashes and time-outs).
    """

    def __init__(self, message: str, *, stage: str, status: int = 0) -> None:
        super().__init__(message)
        self.stage = stage
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        # the default pickling calls the class with the message alone, which the keyword-only
        # attributes refuse; an isolated check sends these errors back from its child
        return _restore_error, (type(self), self.args, dict(self.__dict__))


def _restore_error(cls: type[KernelError], args: tuple[Any, ...], state: dict[str, Any]) -> KernelError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class KernelCrash(KernelError):
    """The code under test ended its isolated process: a signal, or an exit without reporting
    back. Raised for C and CUDA kernels, and reported for a Python ``f`` checked with
    ``isolate=True``, whose ``stage`` is then the check's (``'the ground truth'``,
    ``'backend forward'``, ...).

    Attributes
    ----------
    signal : int
        The signal number (0 when the child exited instead).
    signal_name : str or None
        E.g. ``'SIGSEGV'``.
    exit_code : int
        The child's exit code when it called ``exit`` itself.
    """

    def __init__(self, message: str, *, stage: str, signal: int = 0,
                 signal_name: str | None = None, exit_code: int = 0) -> None:
        super().__init__(message, stage=stage)
        self.signal = signal
        self.signal_name = signal_name
        self.exit_code = exit_code


class KernelTimeout(KernelCrash):
    """A kernel ran past the time limit of its stage and was killed (SIGKILL).

    Attributes
    ----------
    limit : float
        The limit, in seconds.
    """

    def __init__(self, message: str, *, stage: str, limit: float, signal: int = 0,
                 signal_name: str | None = None) -> None:
        super().__init__(message, stage=stage, signal=signal, signal_name=signal_name)
        self.limit = limit


class KernelOverrun(KernelError):
    """A kernel wrote outside a buffer it was given (e.g. past the end of its gradient).

    Attributes
    ----------
    what : str
        What it did, e.g. ``'wrote past the end of grad'``.
    """

    def __init__(self, message: str, *, stage: str, what: str) -> None:
        super().__init__(message, stage=stage)
        self.what = what


# ---- resolving function pointers ----------------------------------------------------------


def _is_cffi(obj: Any) -> bool:
    return type(obj).__module__ == "_cffi_backend"


def _cffi_address(obj: Any) -> int:
    import cffi  # only reached with a cffi object, so cffi is installed

    return int(cffi.FFI().cast("uintptr_t", obj))


@dataclasses.dataclass
class _Resolved:
    address: int
    library: str | None  # the library path it was loaded from, for bare symbol names
    description: str
    short: str = ""  # the function's own name (a symbol, a ctypes __name__) for messages

    def __post_init__(self) -> None:
        self.short = self.short or self.description


class _Loader:
    """Loads libraries once per kernel and keeps them (and every pointer's owner) alive."""

    def __init__(self) -> None:
        self.libraries: dict[str, ctypes.CDLL] = {}
        self.keep: list[Any] = []

    def library(self, path: str, role: str) -> ctypes.CDLL:
        key = os.path.abspath(path) if os.path.exists(path) else path
        if key not in self.libraries:
            try:
                self.libraries[key] = ctypes.CDLL(key)
            except OSError as exc:
                raise KernelLoadError(f"{role}: cannot load library {path!r}: {exc}") from None
        return self.libraries[key]

    def symbol(self, path: str, name: str, role: str) -> int:
        lib = self.library(path, role)
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise KernelLoadError(f"{role}: symbol {name!r} not found in library {path!r}") from None
        address = ctypes.cast(fn, ctypes.c_void_p).value or 0
        if not address:
            raise ValueError(f"{role}: symbol {name!r} in {path!r} is a NULL pointer")
        return address

    def resolve(self, obj: Any, role: str, default_library: str | None) -> _Resolved:
        """Turns a user's function reference into an address; raises naming ``role``."""
        if isinstance(obj, str):
            path, sep, name = obj.rpartition(":")
            if not sep:
                if default_library is None:
                    raise ValueError(
                        f"{role}: expected 'path/to/lib.so:symbol', got {obj!r} (a bare symbol "
                        "name needs f to be given as 'lib.so:symbol')"
                    )
                path, name = default_library, obj
            if not path or not name:
                raise ValueError(f"{role}: expected 'path/to/lib.so:symbol', got {obj!r}")
            return _Resolved(self.symbol(path, name, role), path, f"{name} ({os.path.basename(path)})", name)
        if isinstance(obj, bool):
            raise TypeError(f"{role}: expected a function pointer, got bool")
        if isinstance(obj, (int, np.integer)):
            address = int(obj)
            if address < 0:
                raise ValueError(f"{role}: expected a non-negative address, got {address}")
            if address == 0:
                raise ValueError(f"{role}: NULL function pointer")
            return _Resolved(address, None, f"0x{address:x}")
        if isinstance(obj, ctypes._CFuncPtr):  # type: ignore[attr-defined]
            address = ctypes.cast(obj, ctypes.c_void_p).value or 0
            if not address:
                raise ValueError(f"{role}: NULL function pointer (ctypes)")
            self.keep.append(obj)
            return _Resolved(address, None, getattr(obj, "__name__", f"0x{address:x}"))
        if isinstance(obj, ctypes.c_void_p):
            if not obj.value:
                raise ValueError(f"{role}: NULL function pointer (ctypes.c_void_p)")
            self.keep.append(obj)
            return _Resolved(obj.value, None, f"0x{obj.value:x}")
        if _is_cffi(obj):
            address = _cffi_address(obj)
            if not address:
                raise ValueError(f"{role}: NULL function pointer (cffi)")
            self.keep.append(obj)
            return _Resolved(address, None, f"0x{address:x}")
        raise TypeError(
            f"{role}: expected a ctypes or cffi function pointer, an integer address or "
            f"'path/to/lib.so:symbol', got {type(obj).__name__}"
        )

    def context(self, ctx: Any) -> int:
        """The address of the kernel's context; its owner is kept alive."""
        if ctx is None:
            return 0
        if isinstance(ctx, bool):
            raise TypeError("ctx: expected a pointer, got bool")
        if isinstance(ctx, (int, np.integer)):
            if int(ctx) < 0:
                raise ValueError(f"ctx: expected a non-negative address, got {int(ctx)}")
            return int(ctx)
        if isinstance(ctx, np.ndarray):
            self.keep.append(ctx)
            return int(ctx.ctypes.data)
        if isinstance(ctx, ctypes.c_void_p):
            self.keep.append(ctx)
            return int(ctx.value or 0)
        if isinstance(ctx, (ctypes._Pointer, ctypes._CFuncPtr)):  # type: ignore[attr-defined]
            self.keep.append(ctx)
            return int(ctypes.cast(ctx, ctypes.c_void_p).value or 0)
        if isinstance(ctx, (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)):
            self.keep.append(ctx)
            return ctypes.addressof(ctx)
        if _is_cffi(ctx):
            self.keep.append(ctx)
            return _cffi_address(ctx)
        raise TypeError(
            "ctx: expected None, an integer address, a ctypes object or pointer, a cffi pointer "
            f"or a NumPy array, got {type(ctx).__name__}"
        )


# ---- the kernel ---------------------------------------------------------------------------


def _check_timeout(timeout: Any, isolate: bool) -> None:
    """Validates a ``timeout=`` value; ValueError naming it."""
    if timeout is None or (isinstance(timeout, str) and timeout == "auto"):
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)) \
            or not (timeout > 0) or not math.isfinite(timeout):
        raise ValueError(f"timeout: expected seconds > 0, 'auto' or None, got {timeout!r}")
    if not isolate:
        raise ValueError("timeout: needs isolate=True (an in-process kernel cannot be stopped)")


@dataclasses.dataclass
class StageResult:
    """What one stage produced (see :meth:`CKernel.run_stage`)."""

    stage: str
    gradient: np.ndarray | None  # float64, flat; None when the stage failed
    errors: np.ndarray | None  # the FD error estimates (stage 'function')
    value: float  # s(x) (stage 'function')
    nonfinite: int
    evaluations: int
    seconds: float
    error: KernelError | None


class _KernelOutputs:
    """What CKernel and CudaKernel share about a kernel's outputs: the reported name, the output
    count ``n_out`` gives for n inputs, and the fixed cotangent a vector function is checked
    through. Subclasses set ``name`` and ``n_out``."""

    name: str
    n_out: Any

    @property
    def __name__(self) -> str:  # reports name checked functions by __name__
        return self.name

    def _m(self, n: int) -> int:
        """The number of outputs for n inputs; 0 for a scalar function."""
        if self.n_out is None:
            return 0
        m = self.n_out(n) if callable(self.n_out) else self.n_out
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"n_out({n}) returned {m!r}; expected an integer >= 1")
        return int(m)

    def cotangent(self, n: int, seed: int = 0) -> np.ndarray | None:
        """The fixed random cotangent u (m standard normal values; one output gets 1) through which
        a vector function is checked, or None for a scalar function."""
        m = self._m(n)
        if m == 0:
            return None
        if m == 1:
            return np.ones(1)
        return np.random.default_rng(seed).standard_normal(m)


class CKernel(_KernelOutputs):
    """A native kernel written against ``gradtest.h``, checkable with no Python in the loop.

    Parameters
    ----------
    f : function reference
        The function: ``gradtest_scalar_f64`` (``n_out=None``) or ``gradtest_vector_f64``
        (``n_out`` given), or their ``_f32`` forms with ``dtype="float32"``. A ctypes function
        pointer, a cffi function pointer, an integer address or ``"path/to/lib.so:symbol"``
        (loaded with dlopen and kept alive by this object).
    gradient, vjp, jvp : function reference, optional
        The derivative functions to check (backends ``"user"``, ``"user_vjp"``, ``"user_jvp"``).
        Besides the forms above, a bare symbol name is looked up in f's library. ``gradient``
        applies to scalar functions only.
    ctx : optional
        The opaque pointer passed to every call: None (NULL), an integer address, a ctypes object
        (its address) or pointer, a cffi pointer or a NumPy array (its data). Kept alive.
    dtype : {"float64", "float32"}
        The element type of the kernel's arrays.
    n_out : int or callable, optional
        Number of outputs m of a vector function, or a function of n giving it. None: f is a
        scalar function.
    thread_safe : bool
        True if the kernel may be called concurrently from several threads (sharing ctx): the
        finite differences and the JVP sweep are then split over threads.
    n_in : int, optional
        The number of inputs the kernel expects; when given, an x of another size is refused.
    name : str, optional
        A name for reports; defaults to f's.

    Raises
    ------
    KernelLoadError
        A library failed to load or a symbol is missing.
    ValueError, TypeError
        A NULL pointer, an unknown dtype, a bad ``n_out``, or a gradient for a vector function.
    """

    def __init__(
        self,
        f: Any,
        *,
        gradient: Any = None,
        vjp: Any = None,
        jvp: Any = None,
        ctx: Any = None,
        dtype: str | np.dtype = "float64",
        n_out: int | Callable[[int], int] | None = None,
        thread_safe: bool = False,
        n_in: int | None = None,
        name: str | None = None,
    ) -> None:
        self._loader = _Loader()
        if f is None:
            raise ValueError("f: NULL function pointer (f is required)")
        rf = self._loader.resolve(f, "f", None)
        self._f = rf.address
        self._addresses = {}
        # each function's own name, for messages about what it did ("loss_grad wrote past ...")
        self._short_names = {"function": rf.short, "evaluate": rf.short}
        for role, obj in (("gradient", gradient), ("vjp", vjp), ("jvp", jvp)):
            resolved = None if obj is None else self._loader.resolve(obj, role, rf.library)
            self._addresses[role] = 0 if resolved is None else resolved.address
            self._short_names[role] = role if resolved is None else resolved.short
        # the measured cost of one call of f, per input size (the default time limits)
        self._eval_seconds: dict[int, float] = {}
        self._ctx = self._loader.context(ctx)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}") from None
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
        self.dtype = dt
        if n_out is not None and not callable(n_out):
            if isinstance(n_out, bool) or not isinstance(n_out, (int, np.integer)) or n_out < 1:
                raise ValueError(f"n_out: expected an integer >= 1, a function of n or None, got {n_out!r}")
            n_out = int(n_out)
        self.n_out = n_out
        if n_out is not None and gradient is not None:
            raise ValueError(
                "gradient: applies to scalar functions (n_out=None); check a vector function "
                "through vjp= and jvp="
            )
        if n_in is not None and (isinstance(n_in, bool) or not isinstance(n_in, (int, np.integer)) or n_in < 1):
            raise ValueError(f"n_in: expected an integer >= 1 or None, got {n_in!r}")
        self.n_in = None if n_in is None else int(n_in)
        self.thread_safe = bool(thread_safe)
        self.name = name or rf.description
        self.__gradtest_backends__ = tuple(
            backend for backend, stage in BACKEND_STAGES.items() if self._addresses[stage]
        )

    def __gradtest_dispatch__(self) -> tuple[int, str]:
        """The function f and its C signature, for :func:`gradtest.check_dispatch`: the opt
        check analyses f's machine code; a call check takes f's C arguments (ctx, n, x, ...)."""
        real = "double" if self.dtype == np.float64 else "float"
        if self.n_out is None:
            return self._f, f"int(void *ctx, size_t n, const {real} *x, {real} *f)"
        return self._f, f"int(void *ctx, size_t n, const {real} *x, size_t m, {real} *y)"

    def __repr__(self) -> str:
        kind = "scalar" if self.n_out is None else "vector"
        return (f"CKernel({self.name!r}, {kind}, dtype={self.dtype.name}, "
                f"backends={self.__gradtest_backends__})")

    # -- sizes and arrays ------------------------------------------------------------------

    def _flat_x(self, x: Any) -> np.ndarray:
        """A private, flat, contiguous copy of x after checking its type and size."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x: expected a numpy.ndarray of {self.dtype.name}, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise TypeError(
                f"x: expected a numpy.ndarray of {self.dtype.name} (the kernel's dtype), got {x.dtype}"
            )
        if x.size == 0:
            raise ValueError("x: expected at least one element, got an empty array")
        if self.n_in is not None and x.size != self.n_in:
            raise ValueError(f"x: the kernel takes n_in={self.n_in} inputs, got an array of size {x.size}")
        return np.array(x, dtype=self.dtype.newbyteorder("="), order="C", copy=True).reshape(-1)

    def _dtype_code(self) -> int:
        return 1 if self.dtype == np.float32 else 0

    # -- calling ---------------------------------------------------------------------------

    def __call__(self, x: np.ndarray) -> float | np.ndarray:
        """Evaluates f at x in this process (not isolated). Returns a float for a scalar function,
        a float64 array of m values for a vector one.

        Raises
        ------
        KernelError
            f returned a non-zero status.
        KernelOverrun
            f wrote outside the buffers it was given (caught by canary bytes around them).
        """
        flat = self._flat_x(x)
        m = self._m(flat.size)
        status, kernel_status, y, overrun = _ckernel.evaluate(self._f, self._ctx, self._dtype_code(), m, flat)
        if status == _CODES["EOVERRUN"]:
            raise KernelOverrun(f"{self._short_names['function']} {overrun} (n = {flat.size})",
                                stage="function", what=overrun)
        if status != _CODES["OK"]:
            raise KernelError(f"{self.name}: f returned status {kernel_status}", stage="function",
                              status=kernel_status)
        return float(y[0]) if m == 0 else y

    def run_stage(
        self,
        stage: str,
        x: np.ndarray,
        *,
        u: np.ndarray | None = None,
        method: str = "central",
        richardson: bool = True,
        rel_step: float = 0.0,
        isolate: bool = True,
        timeout: float | str | None = "auto",
        threads: int | None = None,
    ) -> StageResult:
        """Runs one stage of a check with the GIL released and returns what it produced.

        Parameters
        ----------
        stage : {'function', 'gradient', 'vjp', 'jvp', 'evaluate'}
            ``'function'``: the finite-difference gradient of s(x) (f, or <u, f> for a vector
            function) with its error estimates; ``'gradient'``, ``'vjp'``, ``'jvp'``: the same
            gradient from the kernel's derivative function; ``'evaluate'``: one timed call of f
            (``value`` and ``seconds``; no gradient).
        x : numpy.ndarray
            The point, of the kernel's dtype (never modified).
        u : numpy.ndarray, optional
            The cotangent of a vector function; default :meth:`cotangent` with seed 0.
        method, richardson, rel_step
            Finite-difference options (stage 'function').
        isolate : bool
            Run in a forked child (default): a crash becomes a :class:`KernelCrash`.
        timeout : float, "auto" or None
            Seconds before an isolated stage is killed (a number needs ``isolate=True``).
            ``"auto"`` (default): :func:`default_time_limit`, from the cost of one call of f,
            measured once per input size in an isolated child; in-process, no limit. ``None``:
            no limit.
        threads : int, optional
            Threads for the 'function' and 'jvp' stages; default: all usable CPUs when the kernel
            is thread_safe, else 1.

        Returns
        -------
        StageResult
            ``error`` holds a :class:`KernelError` (or subclass) when the kernel failed or
            crashed; then ``gradient`` is None.
        """
        if stage not in _STAGES:
            raise ValueError(f"stage: expected one of {tuple(_STAGES)}, got {stage!r}")
        if method not in _METHODS:
            raise ValueError(f"method: expected one of {tuple(_METHODS)}, got {method!r}")
        if not (rel_step >= 0):
            raise ValueError(f"rel_step: expected a number >= 0, got {rel_step!r}")
        _check_timeout(timeout, isolate)
        nthreads = self._threads(threads)
        flat = self._flat_x(x)
        m = self._m(flat.size)
        if m and u is None:
            u = self.cotangent(flat.size)
        if m:
            u = np.ascontiguousarray(u, dtype=np.float64).reshape(-1)
            if u.size != m:
                raise ValueError(f"u: expected {m} elements (the kernel's outputs), got {u.size}")
        address = self._f if stage in ("function", "evaluate") else self._addresses[stage]
        if not address:
            raise ValueError(f"{stage}: the kernel has no {stage} function")
        limit, probe_error = self._time_limit(stage, flat, u, timeout, isolate, method, richardson, rel_step)
        if probe_error is not None:  # f itself crashed, overran or hung at x: nothing can run
            return StageResult(stage=stage, gradient=None, errors=None, value=math.nan, nonfinite=0,
                               evaluations=1, seconds=0.0, error=probe_error)
        start = time.perf_counter()
        out = _ckernel.run_stage(
            f=self._f, gradient=self._addresses["gradient"], vjp=self._addresses["vjp"],
            jvp=self._addresses["jvp"], ctx=self._ctx, dtype=self._dtype_code(), m=m,
            stage=_STAGES[stage], x=flat, u=u if m else None, method=_METHODS[method],
            richardson=bool(richardson), rel_step=float(rel_step), threads=nthreads,
            isolate=bool(isolate), timeout=limit,
            scale=step_scale(flat, [0, flat.size]) if stage == "function" else None,
        )
        seconds = out["seconds"] if stage == "evaluate" else time.perf_counter() - start
        error = self._error(stage, out, limit, flat.size)
        return StageResult(
            stage=stage,
            gradient=None if error or stage == "evaluate" else out["grad"],
            errors=None if error else out["err"],
            value=out["value"],
            nonfinite=out["nonfinite"],
            evaluations=out["evaluations"],
            seconds=seconds,
            error=error,
        )

    def _time_limit(self, stage: str, flat: np.ndarray, u: np.ndarray | None, timeout: Any,
                    isolate: bool, method: str, richardson: bool,
                    rel_step: float = 0.0) -> tuple[float, KernelError | None]:
        """The limit of one stage in seconds, 0.0 for none (see run_stage's ``timeout``), and the
        error of the evaluation that measured f's cost, when it failed."""
        if not isolate or timeout is None:
            return 0.0, None
        if timeout != "auto":
            return float(timeout), None
        if stage == "evaluate":
            return PROBE_TIME_LIMIT, None
        n = flat.size
        if n not in self._eval_seconds:
            probe = self.run_stage("evaluate", flat, u=u, isolate=True, timeout="auto")
            if probe.error is not None:
                return 0.0, probe.error
            self._eval_seconds[n] = probe.seconds
        per = _evals_per_component(method, richardson, rel_step)
        return default_time_limit(stage, n, self._eval_seconds[n], per), None

    def _threads(self, threads: int | None) -> int:
        if threads is None:
            if not self.thread_safe:
                return 1
            try:
                return max(1, len(os.sched_getaffinity(0)))
            except AttributeError:  # not on Linux
                return max(1, os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        if threads > 1 and not self.thread_safe:
            raise ValueError("threads: the kernel was not declared thread_safe=True")
        return int(threads)

    def _error(self, stage: str, out: dict[str, Any], limit: float, n: int) -> KernelError | None:
        status = out["status"]
        if status == _CODES["OK"]:
            return None
        crash_stage = out["crash_stage"] or stage
        if status == _CODES["EOVERRUN"]:
            who = self._short_names.get(crash_stage, self._short_names.get(stage, stage))
            return KernelOverrun(f"{who} {out['overrun']} (n = {n})", stage=crash_stage,
                                 what=out["overrun"])
        if status == _CODES["ECALLBACK"]:
            what = "f" if stage == "function" else stage
            return KernelError(f"{self.name}: {what} returned status {out['kernel_status']}",
                               stage=stage, status=out["kernel_status"])
        if status == _CODES["ETIMEOUT"]:
            who = self._short_names.get(crash_stage, self.name)
            return KernelTimeout(f"timed out after {limit:g} s: {who} in stage {crash_stage!r}; the "
                                 "child process was killed (SIGKILL); set timeout= (seconds, or None "
                                 "for no limit) if it needs longer", stage=crash_stage, limit=limit,
                                 signal=out["signal"], signal_name=out["signal_name"])
        if status == _CODES["ECRASH"]:
            if out["signal"]:
                msg = f"{self.name}: crashed with {out['signal_name']} in stage {crash_stage!r}"
            else:
                msg = (f"{self.name}: the child process exited with code {out['exit_code']} in stage "
                       f"{crash_stage!r} without reporting back (did the kernel call exit()?)")
            return KernelCrash(msg, stage=crash_stage, signal=out["signal"],
                               signal_name=out["signal_name"], exit_code=out["exit_code"])
        return KernelError(f"{self.name}: stage {stage!r}: {out['status_text']}", stage=stage)

    # -- the check_gradients protocol --------------------------------------------------------

    def __gradtest_check__(self, args: tuple[Any, ...], settings: Any) -> tuple[Any, dict[str, Any]]:
        """Computes the ground truth and every backend's gradient for check_gradients.

        Returns ``(ground_truth, results)``: results maps each of ``__gradtest_backends__`` to a
        one-element list (the gradient, shaped like x) or to the :class:`KernelError` it raised.
        The ground truth is always full mode (every component), computed in the kernel's dtype.

        Raises
        ------
        KernelError
            f itself failed or crashed, so there is no ground truth.
        """
        if len(args) != 1:
            raise TypeError(f"a CKernel takes exactly one argument x (a NumPy array), got {len(args)}")
        (x,) = args
        fd = dict(getattr(settings, "fd_options", None) or {})
        extra = dict(getattr(settings, "extra", None) or {})
        unknown = sorted(set(extra) - set(EXTRA_OPTIONS))
        if unknown:
            raise TypeError(
                f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; a C-kernel check "
                f"also takes {', '.join(EXTRA_OPTIONS)}"
            )
        isolate = extra.get("isolate", True)
        if not isinstance(isolate, (bool, np.bool_)):
            raise TypeError(f"isolate: expected True or False, got {isolate!r}")
        timeout = extra.get("timeout", "auto")
        _check_timeout(timeout, bool(isolate))
        threads = extra.get("threads")
        method = fd.get("method", "central")
        richardson = bool(fd.get("richardson", True))
        rel_step = float(fd.get("rel_step", 0.0) or 0.0)
        seed = int(fd.get("seed", 0) or 0)
        shape = np.shape(x)
        flat = self._flat_x(x)
        u = self.cotangent(flat.size, seed)
        common = dict(isolate=bool(isolate), timeout=timeout, threads=threads)
        truth = self.run_stage("function", x, u=u, method=method, richardson=richardson,
                               rel_step=rel_step, **common)
        if truth.error is not None:
            raise truth.error
        notes = []
        nthreads = self._threads(threads)
        notes.append(
            f"C kernel {self.name}: finite differences in C ({truth.evaluations} calls, "
            f"{nthreads} thread{'s' if nthreads > 1 else ''}"
            + (", isolated in a child process)" if isolate else ", in-process)")
        )
        if isolate and timeout == "auto":
            per = _evals_per_component(method, richardson, rel_step)
            cost = self._eval_seconds.get(flat.size, 0.0)
            notes.append(f"time limit of each isolated stage derived from one evaluation of f "
                         f"({cost * 1e6:.3g} us): {SAFETY_FACTOR:g} x that x the stage's calls, at "
                         f"least {MIN_TIME_LIMIT:g} s (the finite differences: "
                         f"{default_time_limit('function', flat.size, cost, per):.3g} s)")
        if fd.get("mode", "auto") == "directional":
            notes.append("directional mode is not offered for C kernels; the full gradient was computed")
        budget = fd.get("time_budget")
        if fd.get("mode", "auto") == "auto" and budget and truth.seconds > budget:
            notes.append(f"the full finite differences took {truth.seconds:.1f} s, over time_budget="
                         f"{budget} s: C kernels are always checked in full mode (threads help: "
                         "thread_safe=True)")
        gt_dtype = getattr(settings, "ground_truth_dtype", None)
        if gt_dtype is not None and np.dtype(gt_dtype) != self.dtype:
            notes.append(f"the kernel computes in {self.dtype.name}; its finite differences were "
                         f"taken in {self.dtype.name}, not {np.dtype(gt_dtype).name}")
        if self.n_out is not None:
            notes.append("vector function checked through a fixed random cotangent u (seed "
                         f"{seed}): gradient of <u, f(x)>; the VJP called with ybar = u, the JVP "
                         "with the unit vectors e_i")
        if truth.nonfinite:
            raise GroundTruthError(
                f"{self.name}: f returned non-finite values at {truth.nonfinite} of "
                f"{flat.size} perturbed points"
            )
        if not np.isfinite(truth.value):
            raise GroundTruthError(f"{self.name}: f(x) is not finite ({truth.value})")
        gt = GroundTruth(
            mode="full",
            gradients=[truth.gradient.reshape(shape)],
            errors=[truth.errors.reshape(shape)],
            method=method + ("+Richardson" if richardson else ""),
            evaluations=truth.evaluations,
            seconds=truth.seconds,
            dtype=self.dtype,
            notes=notes,
        )
        results: dict[str, Any] = {}
        for backend in self.__gradtest_backends__:
            res = self.run_stage(BACKEND_STAGES[backend], x, u=u, **common)
            results[backend] = res.error if res.error else [res.gradient.reshape(shape)]
        return gt, results


