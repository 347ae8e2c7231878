"""The NumPy surface shared by the engines' array types (``Dual`` and ``Tracked``).

Operators, methods and attributes all route through NumPy's own functions, so a subclass only
implements ``__array_ufunc__``, ``__array_function__`` and ``__getitem__``, and keeps its primal
values in ``self.value`` (a NumPy array). An unchanged NumPy function then runs on it.
"""

from __future__ import annotations

import linecache
import sys
from typing import Any

import numpy as np


def public_name(obj: Any, method: str = "__call__") -> str:
    """The name a user knows ``obj`` (a NumPy/SciPy function or ufunc) by: ``numpy.sum``,
    ``numpy.linalg.inv``, ``numpy.fft.fftshift``, ``scipy.special.iv``, ``numpy.add.outer``.

    Ufuncs carry no ``__module__``, so they are looked up in the NumPy and SciPy namespaces that
    are loaded; functions are named by the shortest loaded parent of their module that exports
    them (``numpy._core.fromnumeric.sum`` is ``numpy.sum``)."""
    name = getattr(obj, "__name__", None) or repr(obj)
    suffix = "" if method == "__call__" else f".{method}"
    if isinstance(obj, np.ufunc):
        for module in ("numpy", "scipy.special"):
            namespace = sys.modules.get(module)
            if namespace is not None and getattr(namespace, name, None) is obj:
                return f"{module}.{name}{suffix}"
        return f"the ufunc {name}{suffix}"
    module = getattr(obj, "__module__", None) or "numpy"
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i])
        namespace = sys.modules.get(candidate)
        if namespace is not None and getattr(namespace, name, None) is obj:
            return f"{candidate}.{name}{suffix}"
    return f"{module}.{name}{suffix}"


def _caller() -> str:
    """' (at file:line: source)' for the innermost frame outside gradtest, or ''."""
    frame = sys._getframe(2)
    package = __name__.rpartition(".")[0]
    while frame is not None and frame.f_globals.get("__name__", "").startswith(package + "."):
        frame = frame.f_back
    if frame is None:
        return ""
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f" (at {frame.f_code.co_filename}:{frame.f_lineno}: {code})" if code else \
        f" (at {frame.f_code.co_filename}:{frame.f_lineno})"


def leaving_error(x: Any, call: str, instead: str) -> NotImplementedError:
    """The error for a conversion that would take ``x`` out of its engine: its derivative would
    silently become 0, so it is refused, naming the call, where it happened and what to do."""
    return NotImplementedError(
        f"{call} of a gradtest.{type(x).__name__} would drop its derivatives (the gradient through "
        f"it would silently be 0){_caller()}; {instead}"
    )


_INSTEAD_FLOAT = ("use NumPy functions on the array (np.sqrt, not math.sqrt), or x.value for a "
                  "deliberately constant primal")


class ArrayLike:
    """Base of the engines' array types: NumPy operators, methods and attributes by delegation."""

    __slots__ = ()
    __array_priority__ = 1000.0  # make NumPy defer to us in mixed binary operations
    value: np.ndarray

    # attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def dtype(self) -> np.dtype:
        return self.value.dtype

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def size(self) -> int:
        return self.value.size

    @property
    def T(self) -> Any:
        return np.transpose(self)

    @property
    def device(self) -> str:
        # the array API's attribute, as NumPy's own arrays give it (code written against the
        # standard asks for it before it computes)
        return "cpu"

    @property
    def mT(self) -> Any:
        return np.swapaxes(self, -1, -2)

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __bool__(self) -> bool:
        return bool(self.value)

    # Conversions out of the engine: each would give a silent zero derivative, so each refuses.
    # Comparisons, bool() and argmax stay allowed: they are piecewise constant by nature.
    def __float__(self) -> float:
        raise leaving_error(self, "float() (or a math.* function, or np.float64())", _INSTEAD_FLOAT)

    def __complex__(self) -> complex:
        raise leaving_error(self, "complex()", "gradtest differentiates real values only (complex inputs are out of "
                            "scope); use x.value for a deliberately constant primal")

    def __int__(self) -> int:
        raise leaving_error(self, "int()", "for a deliberately constant integer use int(x.value)")

    def __index__(self) -> int:
        raise leaving_error(self, "use as an integer (operator.index, range(), an index)",
                            "index with integers; use x.value for a deliberately constant copy")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise leaving_error(
            self, "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into "
            "a plain array, or a library function that calls np.asarray)",
            "build arrays from tracked values with np.stack/np.concatenate instead of "
            "np.array([...]), keep to NumPy functions, or use x.value for a deliberately constant copy")

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        # NumPy (>= 2) is an array API namespace, and its functions dispatch to us, so code
        # written against the standard (xp = x.__array_namespace__()) runs on the engines' arrays
        return np

    # arithmetic
    def __add__(self, other): return np.add(self, other)
    def __radd__(self, other): return np.add(other, self)
    def __sub__(self, other): return np.subtract(self, other)
    def __rsub__(self, other): return np.subtract(other, self)
    def __mul__(self, other): return np.multiply(self, other)
    def __rmul__(self, other): return np.multiply(other, self)
    def __truediv__(self, other): return np.true_divide(self, other)
    def __rtruediv__(self, other): return np.true_divide(other, self)
    def __pow__(self, other): return np.power(self, other)
    def __rpow__(self, other): return np.power(other, self)
    def __matmul__(self, other): return np.matmul(self, other)
    def __rmatmul__(self, other): return np.matmul(other, self)
    def __neg__(self): return np.negative(self)
    def __pos__(self): return np.positive(self)
    def __abs__(self): return np.abs(self)
    def __floordiv__(self, other): return np.floor_divide(self, other)
    def __rfloordiv__(self, other): return np.floor_divide(other, self)
    def __mod__(self, other): return np.remainder(self, other)
    def __rmod__(self, other): return np.remainder(other, self)

    # comparisons give plain boolean arrays (they are not differentiable)
    def __lt__(self, other): return np.less(self, other)
    def __le__(self, other): return np.less_equal(self, other)
    def __gt__(self, other): return np.greater(self, other)
    def __ge__(self, other): return np.greater_equal(self, other)
    def __eq__(self, other): return np.equal(self, other)  # type: ignore[override]
    def __ne__(self, other): return np.not_equal(self, other)  # type: ignore[override]
    __hash__ = None  # type: ignore[assignment]

    # methods
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kw): return np.sum(self, axis=axis, keepdims=keepdims, **kw)
    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kw): return np.mean(self, axis=axis, keepdims=keepdims, **kw)
    def prod(self, axis=None, dtype=None, out=None, keepdims=False, **kw): return np.prod(self, axis=axis, keepdims=keepdims, **kw)
    def max(self, axis=None, out=None, keepdims=False, **kw): return np.max(self, axis=axis, keepdims=keepdims, **kw)
    def min(self, axis=None, out=None, keepdims=False, **kw): return np.min(self, axis=axis, keepdims=keepdims, **kw)
    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False): return np.var(self, axis=axis, ddof=ddof, keepdims=keepdims)
    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False): return np.std(self, axis=axis, ddof=ddof, keepdims=keepdims)
    def cumsum(self, axis=None): return np.cumsum(self, axis=axis)
    def cumprod(self, axis=None): return np.cumprod(self, axis=axis)
    def argmax(self, axis=None, **kw): return np.argmax(self.value, axis=axis, **kw)
    def argmin(self, axis=None, **kw): return np.argmin(self.value, axis=axis, **kw)
    def reshape(self, *shape, order="C"):
        return np.reshape(self, shape[0] if len(shape) == 1 else shape, order=order)
    def ravel(self, order="C"): return np.ravel(self, order=order)
    def flatten(self, order="C"): return np.ravel(self, order=order)
    def transpose(self, *axes):
        return np.transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    def swapaxes(self, a, b): return np.swapaxes(self, a, b)
    def squeeze(self, axis=None): return np.squeeze(self, axis=axis)
    def repeat(self, repeats, axis=None): return np.repeat(self, repeats, axis=axis)
    def clip(self, a_min=None, a_max=None): return np.clip(self, a_min, a_max)
    def dot(self, other): return np.dot(self, other)
    def trace(self, offset=0, axis1=0, axis2=1): return np.trace(self, offset, axis1, axis2)
    def round(self, decimals=0): return np.round(self, decimals)
    def diagonal(self, offset=0, axis1=0, axis2=1): return np.diagonal(self, offset, axis1, axis2)
    def take(self, indices, axis=None): return np.take(self, indices, axis=axis)
    # the engines' arrays are real: the real part and the conjugate are the array, the
    # imaginary part the constant 0 (np.real/np.imag/np.conj give the same)
    def conj(self): return np.real(self)
    def conjugate(self): return np.real(self)

    @property
    def real(self): return np.real(self)

    @property
    def imag(self): return np.imag(self)
    def item(self, *args):
        raise leaving_error(self, ".item()", "index instead (x[()] or x[i]), or use x.value.item() "
                            "for a deliberately constant primal")

    def tolist(self):
        raise leaving_error(self, ".tolist()", "keep the values in an array (index it, or "
                            "iterate over it), or use x.value.tolist() for a deliberately constant copy")
