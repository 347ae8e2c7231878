"""Forward-mode differentiation: dual-number arrays whose tangents are computed by the C core.

A :class:`Dual` holds a primal ``value`` (a float32 or float64 NumPy array of any shape) and ``k``
tangent directions, stored as one array ``tangents`` of shape ``(k,) + value.shape``. NumPy
functions and operators run on duals unchanged through ``__array_ufunc__`` and
``__array_function__``:

* elementwise ufuncs compute their primal with NumPy itself, then the C core reads the local
  partials from the op table (``csrc/core/ops.c``) and combines them with all ``k`` tangents in
  one blocked pass (``csrc/core/dual.c``), broadcasting exactly as NumPy does;
* linear structural operations (reshape, transpose, indexing, concatenate, sum, ...) are applied to
  the tangents with the leading direction axis kept;
* matrix products run the ``k`` tangents of an operand as one stacked GEMM.

Non-differentiable functions (``floor``, comparisons, ``argmax``, ...) return plain NumPy values.
A NumPy function without a rule raises :class:`NotImplementedError` naming it, and so does
converting a dual to a plain array (``np.asarray``), which would drop its derivatives.

Kinks and ties follow the op table (see ``csrc/core/ops.h``): ``abs'(0) = 0``; ``maximum`` and
``minimum`` split ties evenly, and so do the ``max``/``min`` reductions (each of the ``m`` tied
elements gets ``1/m``); ``clip`` is ``minimum(maximum(x, lo), hi)``, so at a bound it takes half;
``std`` of a constant slice and ``norm`` at 0 have derivative 0 (the chain rule's 0 * inf = 0, ops.h).

The ``"forward"`` backend seeds one-hot tangents in chunks of ``k`` over all differentiated
elements and reads the gradient off the tangents of the scalar output: ``n / k`` passes of f.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _forward
from ._arraylike import ArrayLike, public_name
from ._rules import extreme_weights as _extreme_weights, var_scale
from ._tree import output_leaves, tree_map_outputs
from .backends import register_backend

__all__ = ["Dual", "jvp", "DEFAULT_CHUNK_SIZE", "MAX_DEFAULT_SIZE"]

#: Tangent directions per pass of f in the ``"forward"`` backend (``forward_chunk_size`` option).
DEFAULT_CHUNK_SIZE = 32
#: Largest total number of differentiated elements for which ``"forward"`` runs by default.
MAX_DEFAULT_SIZE = 4096

_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
_OP_INDEX = {name: i for i, name in enumerate(_forward.op_names())}


# --------------------------------------------------------------------------------------------
# the array type
# --------------------------------------------------------------------------------------------


class Dual(ArrayLike):
    """An array of dual numbers: a primal value with ``k`` tangent directions.

    Parameters
    ----------
    value : array_like
        The primal values; integer and boolean inputs become float64, float16 becomes float32.
    tangents : array_like
        The tangent directions, shape ``(k,) + value.shape``; cast to the value's dtype.

    Attributes
    ----------
    value : numpy.ndarray
        The primal array (float32 or float64).
    tangents : numpy.ndarray
        The tangents, shape ``(k,) + value.shape``, same dtype as ``value``.
    """

    __slots__ = ("value", "tangents")

    def __init__(self, value: Any, tangents: Any) -> None:
        value = np.array(value, copy=True)
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        elif value.dtype.kind in "biu":
            value = value.astype(np.float64)
        elif value.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"value: expected a real floating array, got dtype {value.dtype}")
        tangents = np.array(tangents, dtype=value.dtype, copy=True)
        if tangents.ndim != value.ndim + 1 or tangents.shape[1:] != value.shape:
            raise ValueError(
                f"tangents: expected shape (k,) + {value.shape}, got {tangents.shape}"
            )
        self.value = value
        self.tangents = tangents

    @property
    def k(self) -> int:
        """Number of tangent directions."""
        return self.tangents.shape[0]

    def __repr__(self) -> str:
        return f"Dual(value={self.value!r}, k={self.k})"

    # __getitem__ and reshape are _forward.getitem/_forward.reshape (set below), which handle int
    # and slice indices and C-order reshapes in C and hand everything else to these
    def _getitem(self, index: Any) -> Dual:
        index = _primal_index(index)
        value = self.value[index]
        tangents = np.moveaxis(np.moveaxis(self.tangents, 0, -1)[_trailing_index(index)], -1, 0)
        return _make(np.asarray(value), tangents)

    def __setitem__(self, index: Any, other: Any) -> None:
        index = _primal_index(index)
        value, tangent = _parts(other)
        self.value[index] = value
        target = np.moveaxis(self.tangents, 0, -1)
        if tangent is None:
            target[_trailing_index(index)] = 0
        else:
            _check_k(self.k, tangent)
            target[_trailing_index(index)] = np.moveaxis(tangent, 0, -1)

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        dtype = np.dtype(dtype)
        if dtype not in _FLOAT_DTYPES:
            return self.value.astype(dtype)  # integer/bool casts are not differentiable
        return _make(self.value.astype(dtype, copy=copy), self.tangents.astype(dtype, copy=copy))

    def copy(self, order: str = "C") -> Dual:
        return _make(self.value.copy(), self.tangents.copy())

    def conj(self) -> Dual:
        return self

    conjugate = conj

    @property
    def real(self) -> Dual:
        return self

    # ---- operators and common methods, straight to their rules (skipping NumPy's dispatch,
    # which costs more than the op itself on small arrays) -----------------------------------

    # + - * / ** and unary - + abs(): set below the ufunc rules, one C call each (_operator)

    def __matmul__(self, other: Any) -> Any: return _matmul(self, other)
    def __rmatmul__(self, other: Any) -> Any: return _matmul(other, self)

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            **kw: Any) -> Any:
        return _sum(self, axis, dtype, out, keepdims, **kw)

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kw: Any) -> Any:
        return _mean(self, axis, dtype, out, keepdims, **kw)

    def _reshape_method(self, *shape: Any, order: str = "C") -> Any:
        if order == "C":
            value = self.value.reshape(*shape)
            return _make(value, self.tangents.reshape((self.tangents.shape[0],) + value.shape))
        return _reshape(self, shape[0] if len(shape) == 1 else shape, order=order)

    def transpose(self, *axes: Any) -> Any:
        return _transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    @property
    def T(self) -> Any:
        return _transpose(self)

    # ---- NumPy protocols ------------------------------------------------------------------

    # __array_ufunc__ is _forward.array_ufunc (set below): plain calls of op-table ufuncs run in C,
    # everything else comes here
    def _array_ufunc(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if kwargs.get("out") is not None:
            raise NotImplementedError(
                f"numpy.{ufunc.__name__}(..., out=...) on gradtest.Dual: in-place output is not "
                "supported; assign the result instead"
            )
        kwargs.pop("out", None)
        if method == "__call__":
            rule = _UFUNC_RULES.get(ufunc)
            if rule is not None:
                _check_kwargs(ufunc.__name__, kwargs, ("dtype",))
                return rule(*inputs, **kwargs)
            if ufunc in _NONDIFF_UFUNCS:
                return ufunc(*(_primal(x) for x in inputs), **kwargs)
        elif method == "reduce" and ufunc in _REDUCE_RULES:
            return _REDUCE_RULES[ufunc](*inputs, **{"axis": 0, **kwargs})
        elif method == "accumulate" and ufunc in _ACCUMULATE_RULES:
            return _ACCUMULATE_RULES[ufunc](*inputs, **{"axis": 0, **kwargs})
        elif ufunc in _NONDIFF_UFUNCS:
            return getattr(ufunc, method)(*(_primal(x) for x in inputs), **kwargs)
        raise NotImplementedError(
            f"gradtest.Dual (forward mode) does not support {public_name(ufunc, method)}"
        )

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Any, kwargs: Any) -> Any:
        rule = _FUNCTION_RULES.get(func)
        if rule is not None:
            return rule(*args, **kwargs)
        if func in _NONDIFF_FUNCTIONS:
            return func(*_primal_tree(args), **_primal_tree(kwargs))
        raise NotImplementedError(f"gradtest.Dual (forward mode) does not support {public_name(func)}")


def _make(value: np.ndarray, tangents: np.ndarray) -> Dual:
    """A Dual from arrays already checked (no copy)."""
    d = object.__new__(Dual)
    d.value = value
    d.tangents = tangents
    return d


def _parts(x: Any) -> tuple[Any, np.ndarray | None]:
    if isinstance(x, Dual):
        return x.value, x.tangents
    return x, None


def _primal(x: Any) -> Any:
    return x.value if isinstance(x, Dual) else x


def _primal_tree(x: Any) -> Any:
    if isinstance(x, Dual):
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(_primal_tree(v) for v in x)
    if isinstance(x, dict):
        return {key: _primal_tree(v) for key, v in x.items()}
    return x


def _check_k(k: int, tangents: np.ndarray) -> None:
    if tangents.shape[0] != k:
        raise ValueError(f"cannot combine duals with {k} and {tangents.shape[0]} tangent directions")


def _common_k(items: Sequence[Any]) -> int:
    ks = {x.tangents.shape[0] for x in items if isinstance(x, Dual)}
    if len(ks) != 1:
        raise ValueError(f"cannot combine duals with different numbers of tangent directions: {sorted(ks)}")
    return ks.pop()


def _check_kwargs(name: str, kwargs: dict[str, Any], allowed: Sequence[str]) -> None:
    for key, val in kwargs.items():
        if key in allowed:
            continue
        if key in ("casting", "order", "subok") or (key == "where" and val is True):
            continue
        raise NotImplementedError(f"numpy.{name}(..., {key}=...) is not supported on gradtest.Dual")


def _float_dtype(*values: Any) -> np.dtype:
    dtype = np.result_type(*values)
    if dtype not in _FLOAT_DTYPES:
        if dtype == np.float16:
            return np.dtype(np.float32)
        if dtype.kind in "biu":
            return np.dtype(np.float64)
        raise TypeError(f"gradtest.Dual supports real float32/float64 values, got dtype {dtype}")
    return dtype


def _tangent_of(x: Any, dtype: np.dtype, k: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """x's tangents in dtype, or zeros of shape (k,) + shape for a constant."""
    if isinstance(x, Dual):
        return x.tangents.astype(dtype, copy=False)
    return np.zeros((k,) + (np.shape(x) if shape is None else shape), dtype=dtype)


# --------------------------------------------------------------------------------------------
# elementwise ufuncs: through the op table
# --------------------------------------------------------------------------------------------


def _float_result(ufunc: np.ufunc, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind != "f":
        raise TypeError(f"numpy.{ufunc.__name__} on gradtest.Dual gave dtype {y.dtype}; "
                        "expected float32 or float64")
    return y.astype(np.float32 if y.dtype == np.float16 else np.float64)


def _operand(x: Any, dtype: np.dtype) -> tuple[Any, Any]:
    """Value and tangents (None for a constant) of one ufunc input, in the result's dtype."""
    if isinstance(x, Dual):
        if x.value.dtype != dtype:
            return x.value.astype(dtype), x.tangents.astype(dtype)
        return x.value, x.tangents
    return np.asarray(x, dtype=dtype), None


def _elementwise_rule(index: int, ufunc: np.ufunc) -> Callable[..., Any]:
    """The rule of an op-table ufunc: the primal by NumPy, the tangents by the C core.

    Written out per arity and without generic helpers because this is the per-op overhead that
    small arrays see."""
    elementwise = _forward.elementwise
    floats = _FLOAT_DTYPES

    def unary(a: Any, dtype: Any = None) -> Any:
        y = ufunc(a.value) if dtype is None else ufunc(a.value, dtype=dtype)
        if type(y) is not np.ndarray:
            y = np.asarray(y)
        if y.dtype not in floats:
            y = _float_result(ufunc, y)
        if not y.flags.c_contiguous:
            y = np.ascontiguousarray(y)
        av, at = _operand(a, y.dtype)
        return _make(y, elementwise(index, y, av, at))

    def binary(a: Any, b: Any, dtype: Any = None) -> Any:
        av = a.value if isinstance(a, Dual) else a
        bv = b.value if isinstance(b, Dual) else b
        y = ufunc(av, bv) if dtype is None else ufunc(av, bv, dtype=dtype)
        if type(y) is not np.ndarray:
            y = np.asarray(y)
        if y.dtype not in floats:
            y = _float_result(ufunc, y)
        if not y.flags.c_contiguous:
            y = np.ascontiguousarray(y)
        dt = y.dtype
        av, at = _operand(a, dt)
        bv, bt = _operand(b, dt)
        return _make(y, elementwise(index, y, av, at, bv, bt))

    rule = unary if ufunc.nin == 1 else binary
    rule.__name__ = f"dual_{ufunc.__name__}"
    return rule


_UFUNC_RULES: dict[np.ufunc, Callable[..., Any]] = {}
for _name, _index in _OP_INDEX.items():
    _ufunc = getattr(np, "absolute" if _name == "abs" else _name, None)
    if isinstance(_ufunc, np.ufunc) and _name != "sign":
        _UFUNC_RULES[_ufunc] = _elementwise_rule(_index, _ufunc)
_UFUNC_RULES[np.fabs] = _UFUNC_RULES[np.absolute]
_UFUNC_RULES[np.float_power] = _elementwise_rule(_OP_INDEX["power"], np.float_power)

# ufuncs whose rule _forward.ufunc runs in one C call (primal, tangents, result), falling back
# to the Python rule for anything but Duals, exact arrays of the Duals' dtype and Python numbers;
# float_power is left out because it changes float32 to float64
_TABLE_NAME = {"absolute": "abs", "fabs": "abs"}
_FAST_UFUNCS: dict[np.ufunc, tuple[int, Callable[..., Any]]] = {
    _ufunc: (_OP_INDEX[_TABLE_NAME.get(_ufunc.__name__, _ufunc.__name__)], _rule)
    for _ufunc, _rule in _UFUNC_RULES.items()
    if _TABLE_NAME.get(_ufunc.__name__, _ufunc.__name__) in _OP_INDEX and _ufunc is not np.float_power
}
_ufunc_call = _forward.ufunc
_forward.register_dual(Dual, _FAST_UFUNCS, Dual._array_ufunc, Dual._getitem, Dual._reshape_method)
Dual.__array_ufunc__ = _forward.method(_forward.array_ufunc)  # type: ignore[method-assign]
Dual.__getitem__ = _forward.method(_forward.getitem)  # type: ignore[method-assign]
Dual.reshape = _forward.method(_forward.reshape)  # type: ignore[method-assign]


def _operator(ufunc: np.ufunc, reflected: bool = False) -> Callable[..., Any]:
    """An operator method of Dual (x + y, -x, ...): straight to _forward.ufunc, skipping NumPy's
    __array_ufunc__ dispatch, which costs more than the op itself on small arrays."""
    index, rule = _FAST_UFUNCS[ufunc]
    call = _ufunc_call
    if ufunc.nin == 1:
        def unary(self: Dual) -> Any:
            return call(index, ufunc, rule, self)
        return unary
    if reflected:
        def reflected_binary(self: Dual, other: Any) -> Any:
            return call(index, ufunc, rule, other, self)
        return reflected_binary

    def binary(self: Dual, other: Any) -> Any:
        return call(index, ufunc, rule, self, other)
    return binary


for _dunder, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                        ("truediv", np.divide), ("pow", np.power)):
    setattr(Dual, f"__{_dunder}__", _operator(_ufunc))
    setattr(Dual, f"__r{_dunder}__", _operator(_ufunc, reflected=True))
Dual.__neg__ = _operator(np.negative)  # type: ignore[method-assign]
Dual.__pos__ = _operator(np.positive)  # type: ignore[method-assign]
Dual.__abs__ = _operator(np.absolute)  # type: ignore[method-assign]

_NONDIFF_UFUNCS = frozenset(
    getattr(np, name)
    for name in (
        "sign floor ceil trunc rint signbit isnan isinf isfinite greater greater_equal less "
        "less_equal equal not_equal logical_and logical_or logical_xor logical_not floor_divide "
        "spacing isnat bitwise_and bitwise_or bitwise_xor invert left_shift right_shift"
    ).split()
    if hasattr(np, name)
)


def _linear_ufunc(ufunc: np.ufunc, scale: float) -> Callable[..., Any]:
    """A ufunc that is a fixed multiple of its input (deg2rad, rad2deg)."""

    def rule(x: Any, dtype: Any = None) -> Any:
        value, tangents = _parts(x)
        y = np.asarray(ufunc(value))
        return _make(y, (tangents * y.dtype.type(scale)).astype(y.dtype, copy=False))

    return rule


for _uf, _scale in ((np.deg2rad, np.pi / 180), (np.radians, np.pi / 180),
                    (np.rad2deg, 180 / np.pi), (np.degrees, 180 / np.pi)):
    _UFUNC_RULES[_uf] = _linear_ufunc(_uf, _scale)


def _matmul_ufunc(a: Any, b: Any, dtype: Any = None) -> Any:
    return _matmul(a, b)


_UFUNC_RULES[np.matmul] = _matmul_ufunc


# --------------------------------------------------------------------------------------------
# helpers for axes and reductions
# --------------------------------------------------------------------------------------------


def _norm_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:
        return (axis % ndim,)
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for ax in axes:
        ax = int(ax)
        if not -ndim <= ax < max(ndim, 1) or (ndim == 0 and ax not in (0, -1)):
            raise np.exceptions.AxisError(ax, ndim)
        out.append(ax % ndim if ndim else 0)
    return tuple(out)


def _shift(axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(ax + 1 for ax in axes)


def _shift_axis(axis: int) -> int:
    """An axis of the value as an axis of the tangents (negative axes are the same)."""
    return axis + 1 if axis >= 0 else axis


def _as_dual(x: Any) -> Dual:
    if not isinstance(x, Dual):
        raise TypeError(f"expected a gradtest.Dual, got {type(x).__name__}")
    return x


def _sum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
         initial: Any = None, where: Any = True) -> Any:
    _no_out("sum", out, where)
    x = _as_dual(a)
    axes = _norm_axes(axis, x.ndim)
    # add.reduce directly: np.sum's Python wrapper costs more than the sum on small arrays
    if initial is None:
        value = np.add.reduce(x.value, axis=axes, dtype=dtype, keepdims=keepdims)
    else:
        value = np.add.reduce(x.value, axis=axes, dtype=dtype, keepdims=keepdims, initial=initial)
    tangents = np.add.reduce(x.tangents, axis=_shift(axes), dtype=dtype, keepdims=keepdims)
    return _make(value if type(value) is np.ndarray else np.asarray(value), tangents)


def _mean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          where: Any = True) -> Any:
    _no_out("mean", out, where)
    x = _as_dual(a)
    axes = _norm_axes(axis, x.ndim)
    value = np.asarray(np.mean(x.value, axis=axes, keepdims=keepdims, dtype=dtype))
    tangents = np.mean(x.tangents, axis=_shift(axes), keepdims=keepdims, dtype=dtype)
    return _make(value, tangents.astype(value.dtype, copy=False))


def _no_out(name: str, out: Any, where: Any = True) -> None:
    if out is not None:
        raise NotImplementedError(f"numpy.{name}(..., out=...) is not supported on gradtest.Dual")
    if where is not True:
        raise NotImplementedError(f"numpy.{name}(..., where=...) is not supported on gradtest.Dual")


def _extreme(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    def rule(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False, initial: Any = None,
             where: Any = True) -> Any:
        _no_out(name, out, where)
        x = _as_dual(a)
        axes = _norm_axes(axis, x.ndim)
        extra = {} if initial is None else {"initial": initial}
        peak = func(x.value, axis=axes, keepdims=True, **extra)
        weights = _extreme_weights(x.value, peak, axes)
        tangents = np.sum(x.tangents * weights, axis=_shift(axes), keepdims=keepdims)
        value = peak if keepdims else np.squeeze(peak, axis=axes)
        return _make(np.asarray(value), tangents)

    return rule


def _moved_last(arr: np.ndarray, axes: tuple[int, ...], lead: int) -> np.ndarray:
    """arr with `axes` (offset by `lead`) moved to the end and flattened into one."""
    src = [ax + lead for ax in axes]
    moved = np.moveaxis(arr, src, list(range(arr.ndim - len(src), arr.ndim)))
    return moved.reshape(moved.shape[: arr.ndim - len(src)] + (-1,))


def _prod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          initial: Any = None, where: Any = True) -> Any:
    _no_out("prod", out, where)
    x = _as_dual(a)
    axes = _norm_axes(axis, x.ndim)
    value = np.asarray(np.prod(x.value, axis=axes, keepdims=keepdims, dtype=dtype,
                               **({} if initial is None else {"initial": initial})))
    v = _moved_last(x.value, axes, 0)
    t = _moved_last(x.tangents, axes, 1)
    # d prod / d v_i = prod of the others, as exclusive left and right products: exact with zeros
    ones = np.ones(v.shape[:-1] + (1,), dtype=v.dtype)
    left = np.cumprod(np.concatenate([ones, v[..., :-1]], axis=-1), axis=-1)
    right = np.flip(np.cumprod(np.concatenate([ones, np.flip(v, -1)[..., :-1]], axis=-1), axis=-1), -1)
    tangents = np.sum(t * (left * right), axis=-1)
    if initial is not None:
        tangents = tangents * np.asarray(initial, dtype=value.dtype)
    tangents = tangents.reshape((t.shape[0],) + value.shape).astype(value.dtype, copy=False)
    return _make(value, tangents)


def _var_parts(x: Dual, axis: Any, ddof: float, keepdims: bool) -> tuple[np.ndarray, np.ndarray]:
    axes = _norm_axes(axis, x.ndim)
    count = int(np.prod([x.shape[ax] for ax in axes])) if axes else 1
    value = np.asarray(np.var(x.value, axis=axes, ddof=ddof, keepdims=keepdims))
    centered = x.value - np.mean(x.value, axis=axes, keepdims=True)
    scale = x.dtype.type(2.0 * var_scale(count, ddof))
    inner = np.sum(centered * x.tangents, axis=_shift(axes), keepdims=keepdims)
    # the chain rule's 0 * nan = 0 (ops.h), as the reverse sweep applies it for ddof >= n
    tangents = inner * scale if np.isfinite(scale) else np.where(inner == 0, 0.0, scale)
    return value, tangents.astype(value.dtype, copy=False)


def _var(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
         keepdims: bool = False, *, where: Any = True, mean: Any = None, correction: Any = None) -> Any:
    _no_out("var", out, where)
    if mean is not None:
        raise NotImplementedError("numpy.var(..., mean=...) is not supported on gradtest.Dual")
    value, tangents = _var_parts(_as_dual(a), axis, ddof if correction is None else correction, keepdims)
    return _make(value, tangents)


def _std(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
         keepdims: bool = False, *, where: Any = True, mean: Any = None, correction: Any = None) -> Any:
    _no_out("std", out, where)
    if mean is not None:
        raise NotImplementedError("numpy.std(..., mean=...) is not supported on gradtest.Dual")
    var, vt = _var_parts(_as_dual(a), axis, ddof if correction is None else correction, keepdims)
    # std = sqrt(var) through the op table, whose chain rule makes a constant slice's derivative 0;
    # for ddof >= n the derivative stays var's NaN (sqrt'(inf) = 0 would hide it)
    d = _as_dual(a)
    axes = _norm_axes(axis, d.ndim)
    count = int(np.prod([d.shape[ax] for ax in axes])) if axes else 1
    if not np.isfinite(var_scale(count, ddof if correction is None else correction)):
        return _make(np.sqrt(var), vt)
    return np.sqrt(_make(var, vt))


def _cumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _no_out("cumsum", out)
    x = _as_dual(a)
    if axis is None:
        x = _ravel(x)
        axis = 0
    (ax,) = _norm_axes(axis, x.ndim)
    return _make(np.cumsum(x.value, axis=ax, dtype=dtype), np.cumsum(x.tangents, axis=ax + 1, dtype=dtype))


def _cumprod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _no_out("cumprod", out)
    x = _as_dual(a)
    if axis is None:
        x = _ravel(x)
        axis = 0
    (ax,) = _norm_axes(axis, x.ndim)
    value = np.cumprod(x.value, axis=ax)
    v = np.moveaxis(x.value, ax, -1)
    t = np.moveaxis(x.tangents, ax + 1, -1)
    m = v.shape[-1]
    if m == 0:
        return _make(value, x.tangents.copy())
    if np.all(v != 0):
        y = np.moveaxis(value, ax, -1)
        tangents = y * np.cumsum(t / v, axis=-1)
    else:
        # exact with zeros: d y_j / d v_i = prod_{l <= j, l != i} v_l for j >= i
        tangents = np.zeros(t.shape, dtype=x.dtype)
        for i in range(m):
            others = v.copy()
            others[..., i] = 1
            partial = np.cumprod(others, axis=-1)
            partial[..., :i] = 0
            tangents += partial * t[..., i : i + 1]
    return _make(value, np.moveaxis(tangents, -1, ax + 1))


_REDUCE_RULES: dict[np.ufunc, Callable[..., Any]] = {
    np.add: lambda a, axis=0, dtype=None, out=None, keepdims=False, **kw: _sum(a, axis, dtype, out, keepdims, **kw),
    np.multiply: lambda a, axis=0, dtype=None, out=None, keepdims=False, **kw: _prod(a, axis, dtype, out, keepdims, **kw),
    np.maximum: lambda a, axis=0, dtype=None, out=None, keepdims=False, **kw: _extreme(np.max, "maximum.reduce")(a, axis, out, keepdims, **kw),
    np.minimum: lambda a, axis=0, dtype=None, out=None, keepdims=False, **kw: _extreme(np.min, "minimum.reduce")(a, axis, out, keepdims, **kw),
}
_ACCUMULATE_RULES: dict[np.ufunc, Callable[..., Any]] = {
    np.add: lambda a, axis=0, dtype=None, out=None: _cumsum(a, axis, dtype, out),
    np.multiply: lambda a, axis=0, dtype=None, out=None: _cumprod(a, axis, dtype, out),
}


# --------------------------------------------------------------------------------------------
# shape operations: the same linear map on the tangents, direction axis kept first
# --------------------------------------------------------------------------------------------


def _reshape(a: Any, shape: Any = None, order: str = "C", *, newshape: Any = None, copy: Any = None) -> Any:
    x = _as_dual(a)
    shape = newshape if shape is None else shape
    value = np.reshape(x.value, shape, order=order)
    if order == "F":
        # the direction axis last is the slowest axis in Fortran order: each direction reshapes alone
        t = np.moveaxis(x.tangents, 0, -1).reshape(value.shape + (x.k,), order="F")
        return _make(value, np.moveaxis(t, -1, 0))
    if order not in ("C", "A"):
        raise NotImplementedError(f"numpy.reshape(..., order={order!r}) is not supported on gradtest.Dual")
    if order == "A" and not x.value.flags.c_contiguous and x.value.flags.f_contiguous:
        return _reshape(x, shape, order="F")
    return _make(value, x.tangents.reshape((x.k,) + value.shape))


def _ravel(a: Any, order: str = "C") -> Any:
    return _reshape(a, -1, order=order)


def _transpose(a: Any, axes: Any = None) -> Any:
    x = _as_dual(a)
    value = np.transpose(x.value, axes)
    perm = tuple(range(x.ndim))[::-1] if axes is None else _norm_axes(axes, x.ndim)
    if len(perm) != x.ndim:
        raise ValueError("axes don't match array")
    return _make(value, np.transpose(x.tangents, (0,) + _shift(perm)))


def _swapaxes(a: Any, axis1: int, axis2: int) -> Any:
    x = _as_dual(a)
    (a1,) = _norm_axes(axis1, x.ndim)
    (a2,) = _norm_axes(axis2, x.ndim)
    return _make(np.swapaxes(x.value, a1, a2), np.swapaxes(x.tangents, a1 + 1, a2 + 1))


def _moveaxis(a: Any, source: Any, destination: Any) -> Any:
    x = _as_dual(a)
    src = _norm_axes(source, x.ndim)
    dst = _norm_axes(destination, x.ndim)
    return _make(np.moveaxis(x.value, src, dst), np.moveaxis(x.tangents, _shift(src), _shift(dst)))


def _expand_dims(a: Any, axis: Any) -> Any:
    x = _as_dual(a)
    value = np.expand_dims(x.value, axis)
    return _make(value, x.tangents.reshape((x.k,) + value.shape))


def _squeeze(a: Any, axis: Any = None) -> Any:
    x = _as_dual(a)
    value = np.squeeze(x.value, axis=axis)
    return _make(value, x.tangents.reshape((x.k,) + value.shape))


def _broadcast_to(array: Any, shape: Any, subok: bool = False) -> Any:
    x = _as_dual(array)
    value = np.broadcast_to(x.value, shape)
    t = x.tangents.reshape((x.k,) + (1,) * (value.ndim - x.ndim) + x.shape)
    return _make(value, np.broadcast_to(t, (x.k,) + value.shape))


def _broadcast_arrays(*args: Any, subok: bool = False) -> Any:
    shape = np.broadcast_shapes(*(np.shape(_primal(a)) for a in args))
    return tuple(_broadcast_to(a, shape) if isinstance(a, Dual) else np.broadcast_to(a, shape) for a in args)


def _concatenate(arrays: Any, axis: Any = 0, out: Any = None, dtype: Any = None, casting: str = "same_kind") -> Any:
    _no_out("concatenate", out)
    arrays = list(arrays)
    values = [_primal(a) for a in arrays]
    value = np.concatenate(values, axis=axis, dtype=dtype, casting=casting)
    k = _common_k(arrays)
    dt = _float_dtype(value)
    tangents = [_tangent_of(a, dt, k) for a in arrays]
    if axis is None:
        tangents = [t.reshape(k, -1) for t in tangents]
        tax = 1
    else:
        tax = _shift_axis(int(axis))
    return _make(value.astype(dt, copy=False), np.concatenate(tangents, axis=tax))


def _stack(arrays: Any, axis: int = 0, out: Any = None, dtype: Any = None, casting: str = "same_kind") -> Any:
    _no_out("stack", out)
    arrays = list(arrays)
    value = np.stack([_primal(a) for a in arrays], axis=axis, dtype=dtype, casting=casting)
    k = _common_k(arrays)
    dt = _float_dtype(value)
    (ax,) = _norm_axes(axis, value.ndim)
    tangents = np.stack([_tangent_of(a, dt, k) for a in arrays], axis=ax + 1)
    return _make(value.astype(dt, copy=False), tangents)


def _atleast(n: int) -> Callable[..., Any]:
    func = {1: np.atleast_1d, 2: np.atleast_2d, 3: np.atleast_3d}[n]

    def rule(*arys: Any) -> Any:
        out = []
        for a in arys:
            if isinstance(a, Dual):
                value = func(a.value)
                out.append(_make(value, a.tangents.reshape((a.k,) + value.shape)))
            else:
                out.append(func(a))
        return out[0] if len(out) == 1 else tuple(out)

    return rule


def _hstack(tup: Any, *, dtype: Any = None, casting: str = "same_kind") -> Any:
    arrs = [_atleast(1)(a) for a in tup]
    axis = 0 if arrs and all(np.ndim(_primal(a)) == 1 for a in arrs) else 1
    return _concatenate(arrs, axis=axis, dtype=dtype, casting=casting)


def _vstack(tup: Any, *, dtype: Any = None, casting: str = "same_kind") -> Any:
    return _concatenate([_atleast(2)(a) for a in tup], axis=0, dtype=dtype, casting=casting)


def _flip(m: Any, axis: Any = None) -> Any:
    x = _as_dual(m)
    axes = _norm_axes(axis, x.ndim)
    # np.flip of a 0-d array returns a NumPy scalar: keep an array
    return _make(np.asarray(np.flip(x.value, axes)), np.flip(x.tangents, _shift(axes)))


def _tile(A: Any, reps: Any) -> Any:
    x = _as_dual(A)
    reps = (int(reps),) if np.ndim(reps) == 0 else tuple(int(r) for r in reps)
    d = max(x.ndim, len(reps))
    reps = (1,) * (d - len(reps)) + reps
    value = np.tile(x.value, reps)
    t = x.tangents.reshape((x.k,) + (1,) * (d - x.ndim) + x.shape)
    return _make(value, np.tile(t, (1,) + reps))


def _repeat(a: Any, repeats: Any, axis: Any = None) -> Any:
    x = _as_dual(a)
    if axis is None:
        x = _ravel(x)
        axis = 0
    (ax,) = _norm_axes(axis, x.ndim)
    return _make(np.repeat(x.value, repeats, axis=ax), np.repeat(x.tangents, repeats, axis=ax + 1))


def _take(a: Any, indices: Any, axis: Any = None, out: Any = None, mode: str = "raise") -> Any:
    _no_out("take", out)
    x = _as_dual(a)
    if axis is None:
        x = _ravel(x)
        axis = 0
    (ax,) = _norm_axes(axis, x.ndim)
    indices = _primal(indices)
    return _make(np.asarray(np.take(x.value, indices, axis=ax, mode=mode)),
                 np.take(x.tangents, indices, axis=ax + 1, mode=mode))


def _take_along_axis(arr: Any, indices: Any, axis: Any = -1) -> Any:
    x = _as_dual(arr)
    if axis is None:
        x = _ravel(x)
        axis = 0
    (ax,) = _norm_axes(axis, x.ndim)
    idx = np.asarray(_primal(indices))
    return _make(np.take_along_axis(x.value, idx, axis=ax), np.take_along_axis(x.tangents, idx[None], axis=ax + 1))


def _sort(a: Any, axis: Any = -1, kind: Any = None, order: Any = None, *, stable: Any = None) -> Any:
    x = _as_dual(a)
    if axis is None:
        x = _ravel(x)
        axis = -1
    idx = np.argsort(x.value, axis=axis, kind=kind, stable=stable)
    return _take_along_axis(x, idx, axis=axis)


def _diff(a: Any, n: int = 1, axis: int = -1, prepend: Any = np._NoValue, append: Any = np._NoValue) -> Any:
    if prepend is not np._NoValue or append is not np._NoValue:
        raise NotImplementedError("numpy.diff(..., prepend/append=...) is not supported on gradtest.Dual")
    x = _as_dual(a)
    (ax,) = _norm_axes(axis, x.ndim)
    return _make(np.diff(x.value, n=n, axis=ax), np.diff(x.tangents, n=n, axis=ax + 1))


def _copy(a: Any, order: str = "K", subok: bool = False) -> Any:
    return _as_dual(a).copy()


def _where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        return np.where(_primal(condition))
    cond = np.asarray(_primal(condition), dtype=bool)
    value = np.where(cond, _primal(x), _primal(y))
    dt = _float_dtype(value)
    k = _common_k([x, y])
    return _make(value.astype(dt, copy=False),
                 np.where(cond, _aligned_tangent(x, dt, k, value.ndim), _aligned_tangent(y, dt, k, value.ndim)))


def _aligned_tangent(x: Any, dtype: np.dtype, k: int, ndim: int) -> np.ndarray:
    """x's tangents (zeros for a constant) with size-1 axes after the direction axis, so that
    they broadcast against (k,) + a shape of `ndim` axes as x broadcasts against that shape."""
    if isinstance(x, Dual):
        return x.tangents.astype(dtype, copy=False).reshape((k,) + (1,) * (ndim - x.ndim) + x.shape)
    return np.zeros((k,) + (1,) * ndim, dtype=dtype)


def _clip(a: Any, a_min: Any = np._NoValue, a_max: Any = np._NoValue, out: Any = None, *,
          min: Any = np._NoValue, max: Any = np._NoValue, **kwargs: Any) -> Any:
    _no_out("clip", out)
    lo = min if a_min is np._NoValue else a_min
    hi = max if a_max is np._NoValue else a_max
    result = a
    if lo is not None and lo is not np._NoValue:
        result = np.maximum(result, lo)
    if hi is not None and hi is not np._NoValue:
        result = np.minimum(result, hi)
    return result


def _diagonal(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    x = _as_dual(a)
    (a1,) = _norm_axes(axis1, x.ndim)
    (a2,) = _norm_axes(axis2, x.ndim)
    return _make(np.diagonal(x.value, offset, a1, a2), np.diagonal(x.tangents, offset, a1 + 1, a2 + 1))


def _trace(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None, out: Any = None) -> Any:
    _no_out("trace", out)
    x = _as_dual(a)
    (a1,) = _norm_axes(axis1, x.ndim)
    (a2,) = _norm_axes(axis2, x.ndim)
    return _make(np.asarray(np.trace(x.value, offset, a1, a2, dtype=dtype)),
                 np.trace(x.tangents, offset, a1 + 1, a2 + 1, dtype=dtype))


def _like(func: Callable[..., Any]) -> Callable[..., Any]:
    """zeros_like and friends: constants with the dual's shape and dtype."""

    def rule(a: Any, *args: Any, **kwargs: Any) -> Any:
        return func(_primal(a), *args, **kwargs)

    return rule


# --------------------------------------------------------------------------------------------
# products
# --------------------------------------------------------------------------------------------


def _dual_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None, np.dtype]:
    av, at = _parts(a)
    bv, bt = _parts(b)
    dt = _float_dtype(av, bv)
    av = np.asarray(av).astype(dt, copy=False)
    bv = np.asarray(bv).astype(dt, copy=False)
    if at is not None and bt is not None:
        _check_k(at.shape[0], bt)
    at = None if at is None else at.astype(dt, copy=False)
    bt = None if bt is None else bt.astype(dt, copy=False)
    return av, at, bv, bt, dt


def _matmul(a: Any, b: Any) -> Any:
    av, at, bv, bt, dt = _dual_pair(a, b)
    if av.ndim == 0 or bv.ndim == 0:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    if av.ndim <= 2 and bv.ndim <= 2:
        # promote vectors to matrices, run the stacked-GEMM kernel (primal included, so that one
        # BLAS thread pool does all of it), and drop the added axes
        a2 = av.reshape(1, -1) if av.ndim == 1 else av
        b2 = bv.reshape(-1, 1) if bv.ndim == 1 else bv
        if a2.shape[1] != b2.shape[0]:
            np.matmul(av, bv)  # raises NumPy's own shape error
        k = (at if at is not None else bt).shape[0]
        a2t = None if at is None else np.ascontiguousarray(at.reshape((k,) + a2.shape))
        b2t = None if bt is None else np.ascontiguousarray(bt.reshape((k,) + b2.shape))
        value, tangents = _forward.matmul(np.ascontiguousarray(a2), a2t, np.ascontiguousarray(b2), b2t)
        shape = value.shape[av.ndim == 1 : value.ndim - (bv.ndim == 1)]
        return _make(value.reshape(shape), tangents.reshape((k,) + shape))
    value = np.asarray(np.matmul(av, bv))
    # batched: NumPy's matmul loops BLAS over the stacks; the direction axis is one more batch
    # axis. Vectors are promoted to matrices and the added axes (size 1) dropped by the reshape.
    k = (at if at is not None else bt).shape[0]
    a2 = av[None, :] if av.ndim == 1 else av
    b2 = bv[:, None] if bv.ndim == 1 else bv
    r = max(a2.ndim, b2.ndim)
    out = None
    if at is not None:
        t = at[:, None, :] if av.ndim == 1 else at
        out = np.matmul(t.reshape((k,) + (1,) * (r - a2.ndim) + a2.shape), b2)
    if bt is not None:
        t = bt[..., None] if bv.ndim == 1 else bt
        term = np.matmul(a2, t.reshape((k,) + (1,) * (r - b2.ndim) + b2.shape))
        out = term if out is None else out + term
    assert out is not None
    return _make(value, out.reshape((k,) + value.shape))


def _tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    av, at, bv, bt, dt = _dual_pair(a, b)
    if np.ndim(axes) == 0:
        n = int(axes)
        a_axes = tuple(range(av.ndim - n, av.ndim))
        b_axes = tuple(range(n))
    else:
        a_axes, b_axes = axes
        a_axes = _norm_axes(a_axes, av.ndim)
        b_axes = _norm_axes(b_axes, bv.ndim)
    value = np.asarray(np.tensordot(av, bv, axes=(a_axes, b_axes)))
    out = None
    if at is not None:
        # (k,) + free_a + free_b: the k directions ride along a's free axes, one GEMM
        out = np.tensordot(at, bv, axes=(_shift(a_axes), b_axes))
    if bt is not None:
        term = np.tensordot(av, bt, axes=(a_axes, _shift(b_axes)))
        free_a = av.ndim - len(a_axes)
        term = np.moveaxis(term, free_a, 0)
        out = term if out is None else out + term
    assert out is not None
    return _make(value, out.astype(dt, copy=False))


def _dot(a: Any, b: Any, out: Any = None) -> Any:
    _no_out("dot", out)
    na, nb = np.ndim(_primal(a)), np.ndim(_primal(b))
    if na == 0 or nb == 0:
        return np.multiply(a, b)
    if na <= 2 and nb <= 2:
        return _matmul(a, b)
    return _tensordot(a, b, axes=([na - 1], [nb - 2 if nb >= 2 else 0]))


def _inner(a: Any, b: Any) -> Any:
    na, nb = np.ndim(_primal(a)), np.ndim(_primal(b))
    if na == 0 or nb == 0:
        return np.multiply(a, b)
    return _tensordot(a, b, axes=([na - 1], [nb - 1]))


def _outer(a: Any, b: Any, out: Any = None) -> Any:
    _no_out("outer", out)
    a = _ravel(a) if isinstance(a, Dual) else np.ravel(a)
    b = _ravel(b) if isinstance(b, Dual) else np.ravel(b)
    return np.multiply(a[:, None], b[None, :])


def _vdot(a: Any, b: Any) -> Any:
    a = _ravel(a) if isinstance(a, Dual) else np.ravel(a)
    b = _ravel(b) if isinstance(b, Dual) else np.ravel(b)
    return _tensordot(a, b, axes=1)


def _einsum_output(inputs: str) -> str:
    letters = inputs.replace(",", "").replace(".", "")
    once = sorted(c for c in set(letters) if letters.count(c) == 1)
    return ("..." if "..." in inputs else "") + "".join(once)


def _einsum(*operands: Any, out: Any = None, optimize: Any = False, **kwargs: Any) -> Any:
    _no_out("einsum", out)
    if not operands or not isinstance(operands[0], str):
        raise NotImplementedError("numpy.einsum on gradtest.Dual needs the subscripts-string form")
    spec = operands[0].replace(" ", "")
    ops = list(operands[1:])
    inputs, _, output = spec.partition("->")
    if "->" not in spec:
        output = _einsum_output(inputs)
    terms = inputs.split(",")
    if len(terms) != len(ops):
        raise ValueError("einsum: more operands than subscripts" if len(ops) > len(terms) else
                         "einsum: fewer operands than subscripts")
    free = next(c for c in string.ascii_letters if c not in spec)
    values = [_primal(x) for x in ops]
    dt = _float_dtype(*values)
    values = [np.asarray(v).astype(dt, copy=False) for v in values]
    value = np.asarray(np.einsum(f"{inputs}->{output}", *values, optimize=optimize, **kwargs))
    k = _common_k(ops)
    tangents = np.zeros((k,) + value.shape, dtype=dt)
    for i, x in enumerate(ops):
        if not isinstance(x, Dual):
            continue
        sub = list(terms)
        sub[i] = free + sub[i]
        args = list(values)
        args[i] = x.tangents.astype(dt, copy=False)
        # the einsum is linear in each operand: replace it by its tangents, with one more index
        tangents += np.einsum(f"{','.join(sub)}->{free}{output}", *args,
                              optimize=True if len(ops) > 1 else False, **kwargs)
    return _make(value, tangents)


def _norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    d = _as_dual(x)
    if axis is None and ord is None:
        return np.sqrt(_sum(d * d, axis=None, keepdims=keepdims))
    axes = _norm_axes(axis, d.ndim)
    if len(axes) == 2:
        if ord in (None, "fro"):
            return np.sqrt(_sum(d * d, axis=axes, keepdims=keepdims))
        raise NotImplementedError(f"numpy.linalg.norm(..., ord={ord!r}) of a matrix is not supported on gradtest.Dual")
    if len(axes) != 1:
        raise ValueError("Improper number of dimensions to norm.")
    if ord is None or ord == 2:
        return np.sqrt(_sum(d * d, axis=axes, keepdims=keepdims))
    if ord == np.inf:  # initial=0 as NumPy: an empty vector's norm is 0
        return _extreme(np.max, "max")(np.abs(d), axis=axes, keepdims=keepdims, initial=0.0)
    if ord == -np.inf:
        return _extreme(np.min, "min")(np.abs(d), axis=axes, keepdims=keepdims)
    if ord == 1:
        return _sum(np.abs(d), axis=axes, keepdims=keepdims)
    if ord == 0:
        return np.sum(d.value != 0, axis=axes, keepdims=keepdims).astype(d.dtype)
    p = float(ord)
    return np.power(_sum(np.power(np.abs(d), p), axis=axes, keepdims=keepdims), 1.0 / p)


def _per_direction(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Rule of a function of one array that is linear in it (roll, rot90, tril, diag, ...): the
    same function applied to each direction's tangent."""

    def rule(a: Any, *args: Any, **kwargs: Any) -> Any:
        x = _as_dual(a)
        value = np.asarray(fn(x.value, *args, **kwargs))
        tangents = np.stack([np.asarray(fn(t, *args, **kwargs)) for t in x.tangents]) if x.k else \
            np.zeros((0,) + value.shape, dtype=value.dtype)
        return _make(value, tangents.astype(value.dtype, copy=False))

    return rule


def _per_direction_many(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same for a function of a sequence of arrays (column_stack, dstack)."""

    def rule(arrays: Any, *args: Any, **kwargs: Any) -> Any:
        arrays = list(arrays)
        value = np.asarray(fn([_primal(a) for a in arrays], *args, **kwargs))
        dt = _float_dtype(value)
        k = _common_k(arrays)
        tangents = [_tangent_of(a, dt, k) for a in arrays]
        out = np.stack([np.asarray(fn([t[i] for t in tangents], *args, **kwargs)) for i in range(k)])
        return _make(value.astype(dt, copy=False), out.astype(dt, copy=False))

    return rule


_FUNCTION_RULES: dict[Callable[..., Any], Callable[..., Any]] = {
    np.sum: _sum, np.mean: _mean, np.prod: _prod,
    np.max: _extreme(np.max, "max"), np.amax: _extreme(np.max, "amax"),
    np.min: _extreme(np.min, "min"), np.amin: _extreme(np.min, "amin"),
    np.var: _var, np.std: _std, np.cumsum: _cumsum, np.cumprod: _cumprod,
    np.reshape: _reshape, np.ravel: _ravel, np.transpose: _transpose, np.swapaxes: _swapaxes,
    np.moveaxis: _moveaxis, np.expand_dims: _expand_dims, np.squeeze: _squeeze,
    np.broadcast_to: _broadcast_to, np.broadcast_arrays: _broadcast_arrays,
    np.concatenate: _concatenate, np.stack: _stack, np.hstack: _hstack, np.vstack: _vstack,
    np.atleast_1d: _atleast(1), np.atleast_2d: _atleast(2), np.atleast_3d: _atleast(3),
    np.flip: _flip, np.tile: _tile, np.repeat: _repeat, np.take: _take,
    np.take_along_axis: _take_along_axis, np.sort: _sort, np.diff: _diff, np.copy: _copy,
    np.where: _where, np.clip: _clip, np.diagonal: _diagonal, np.trace: _trace,
    np.dot: _dot, np.inner: _inner, np.outer: _outer, np.vdot: _vdot, np.tensordot: _tensordot,
    np.einsum: _einsum, np.linalg.norm: _norm, np.matmul: lambda a, b, **kw: _matmul(a, b),
    np.roll: _per_direction(np.roll), np.rot90: _per_direction(np.rot90),
    np.fliplr: _per_direction(np.fliplr), np.flipud: _per_direction(np.flipud),
    np.tril: _per_direction(np.tril), np.triu: _per_direction(np.triu),
    np.diag: _per_direction(np.diag),
    np.column_stack: _per_direction_many(np.column_stack), np.dstack: _per_direction_many(np.dstack),
    np.zeros_like: _like(np.zeros_like), np.ones_like: _like(np.ones_like),
    np.empty_like: _like(np.empty_like), np.full_like: _like(np.full_like),
}
for _alias in ("permute_dims", "concat"):
    if hasattr(np, _alias):
        _FUNCTION_RULES[getattr(np, _alias)] = _FUNCTION_RULES[
            np.transpose if _alias == "permute_dims" else np.concatenate]
if hasattr(np, "matrix_transpose"):
    _FUNCTION_RULES[np.matrix_transpose] = lambda x: _swapaxes(x, -1, -2)

_NONDIFF_FUNCTIONS = frozenset(
    getattr(np, name)
    for name in (
        "argmax argmin argsort argwhere nonzero flatnonzero count_nonzero any all round around fix "
        "isclose allclose array_equal array_equiv shape ndim size result_type searchsorted "
        "unique isreal iscomplex isscalar histogram digitize"
    ).split()
    if hasattr(np, name)
)


# --------------------------------------------------------------------------------------------
# indexing
# --------------------------------------------------------------------------------------------


def _primal_index(index: Any) -> Any:
    if isinstance(index, Dual):
        raise IndexError("a gradtest.Dual cannot be used as an index; use its .value")
    if isinstance(index, tuple):
        if any(isinstance(i, Dual) for i in index):
            raise IndexError("a gradtest.Dual cannot be used as an index; use its .value")
        return index
    return (index,)


def _trailing_index(index: tuple[Any, ...]) -> tuple[Any, ...]:
    """The index that selects the same elements of the tangents with the direction axis moved last.

    The direction axis stays a trailing, basic axis, so advanced-index reordering (NumPy moves
    non-adjacent advanced indices to the front) affects values and tangents alike."""
    if any(i is Ellipsis for i in index):
        return index + (slice(None),)
    return index


# --------------------------------------------------------------------------------------------
# public API: jvp and the backend
# --------------------------------------------------------------------------------------------


def jvp(f: Callable[..., Any], args: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Jacobian-vector product of ``f`` at ``args`` along ``tangents``, in forward mode.

    Parameters
    ----------
    f : callable
        A NumPy function of the positional arguments ``args``.
    args : sequence
        Primal values: arrays or numbers.
    tangents : sequence
        One tangent per argument, of that argument's shape, or None for an argument held
        constant.

    Returns
    -------
    value, tangent
        f's output and its directional derivative, with the same structure (an array, a number,
        or a tuple/list/dict of them). Outputs that do not depend on the arguments get zeros.

    Raises
    ------
    NotImplementedError
        If f uses a NumPy function the forward mode does not support (the message names it).
    """
    for value, name in ((args, "args"), (tangents, "tangents")):
        # an array or a string would be taken apart element by element
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{name}: expected a tuple or list with one entry per argument of f, "
                            f"got {type(value).__name__}")
    args = tuple(args)
    tangents = tuple(tangents)
    if len(args) != len(tangents):
        raise ValueError(f"tangents: expected {len(args)} entries (one per argument), got {len(tangents)}")
    duals = []
    for i, (x, t) in enumerate(zip(args, tangents)):
        if t is None:
            duals.append(x)
            continue
        value = np.asarray(x)
        if value.dtype not in _FLOAT_DTYPES and value.dtype.kind not in "biuf":
            raise TypeError(f"args[{i}]: expected a real array or number, got dtype {value.dtype}")
        t = np.asarray(t)
        if t.shape != value.shape:
            raise ValueError(f"tangents[{i}]: expected shape {value.shape}, got {t.shape}")
        duals.append(Dual(value, t[None]))
    out = f(*duals)
    if isinstance(out, Dual):  # the common single-array output: no tree walk (two cost 10 us)
        return out.value, out.tangents[0]

    def primal(leaf: Any) -> Any:
        return leaf.value if isinstance(leaf, Dual) else leaf

    def tangent(leaf: Any) -> Any:
        if isinstance(leaf, Dual):
            return leaf.tangents[0]
        return np.zeros_like(np.asarray(leaf, dtype=np.result_type(leaf, np.float64)))

    return tree_map_outputs(primal, out), tree_map_outputs(tangent, out)


def _chunk_size(problem: Any) -> int:
    k = problem.options.get("forward_chunk_size", DEFAULT_CHUNK_SIZE)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"forward_chunk_size: expected a positive integer, got {k!r}")
    return int(k)


def _blas_threads(problem: Any) -> int:
    n = problem.options.get("forward_blas_threads", 1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"forward_blas_threads: expected a positive integer, got {n!r}")
    return int(n)


def _compute(problem: Any) -> list[np.ndarray]:
    """The gradient of problem.scalar_output by forward mode: one pass of f per chunk of k
    one-hot directions across all differentiated elements.

    The dual matmuls of a gradient check are many small GEMMs; OpenBLAS's worker threads cost
    more than they save on those (30x slower on a loaded two-core machine in the benchmark), so
    they run on ``forward_blas_threads`` (default 1) threads while any forward computation is
    in progress. The setting belongs to the core's own OpenBLAS (NumPy's is separate) and is
    process-wide, so concurrent computations share it: the first sets it, the last restores it."""
    k = _chunk_size(problem)
    threads = _blas_threads(problem)
    with _BLAS_LOCK:
        if _BLAS_STATE["active"] == 0:
            _BLAS_STATE["saved"] = _forward.blas_threads(threads)
        _BLAS_STATE["active"] += 1
    try:
        if getattr(problem, "directions", None) is not None:
            return _compute_directional(problem, problem.directions, k)
        return _compute_chunks(problem, k)
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["active"] -= 1
            if _BLAS_STATE["active"] == 0:
                _forward.blas_threads(_BLAS_STATE["saved"])


_BLAS_LOCK = threading.Lock()
_BLAS_STATE = {"active": 0, "saved": 0}


def _compute_chunks(problem: Any, k: int) -> list[np.ndarray]:
    leaves = problem.diff_leaves
    dtypes = [leaf.dtype if leaf.dtype in _FLOAT_DTYPES else
              np.dtype(np.float32 if leaf.dtype == np.float16 else np.float64) for leaf in leaves]
    grads = [np.zeros(leaf.size, dtype=dt) for leaf, dt in zip(leaves, dtypes)]
    offsets = np.cumsum([0] + [leaf.size for leaf in leaves])
    total = int(offsets[-1])
    for start in range(0, total, k):
        kk = min(k, total - start)
        duals = []
        for leaf, dt, off in zip(leaves, dtypes, offsets[:-1]):
            t = np.zeros((kk, leaf.size), dtype=dt)
            lo, hi = max(start, off), min(start + kk, off + leaf.size)
            if lo < hi:
                t[np.arange(lo - start, hi - start), np.arange(lo - off, hi - off)] = 1
            duals.append(_make(np.array(leaf, dtype=dt, copy=True), t.reshape((kk,) + leaf.shape)))
        out = problem.scalar_output(duals)
        if isinstance(out, Dual):
            if out.size != 1:
                raise ValueError(f"f's checked output has shape {out.shape}; expected a scalar")
            directional = out.tangents.reshape(kk)
        else:
            directional = np.zeros(kk)  # the output does not depend on the inputs
        for g, off, size in zip(grads, offsets[:-1], (leaf.size for leaf in leaves)):
            lo, hi = max(start, off), min(start + kk, off + size)
            if lo < hi:
                g[lo - off : hi - off] = directional[lo - start : hi - start]
    return [g.reshape(leaf.shape) for g, leaf in zip(grads, leaves)]


# elements of tangent (directions times differentiated elements) one directional pass may carry:
# 4 float64 directions of 10^6 elements, so that a pass's intermediates stay within a few times
# the input's memory per op
DIRECTIONAL_BLOCK_ELEMENTS = 1 << 22


def _leaf_dtypes(leaves: list[np.ndarray]) -> list[np.dtype]:
    return [leaf.dtype if leaf.dtype in _FLOAT_DTYPES else
            np.dtype(np.float32 if leaf.dtype == np.float16 else np.float64) for leaf in leaves]


def _pass_along(problem: Any, leaves: list[np.ndarray], dtypes: list[np.dtype], rows: np.ndarray) -> np.ndarray:
    """One pass of f with the tangents ``rows`` (kk, total), split over the leaves in order:
    the kk directional derivatives of problem.scalar_output, float64."""
    kk, off, duals = rows.shape[0], 0, []
    for leaf, dt in zip(leaves, dtypes):
        t = np.ascontiguousarray(rows[:, off:off + leaf.size], dtype=dt).reshape((kk,) + leaf.shape)
        duals.append(_make(np.array(leaf, dtype=dt, copy=True), t))
        off += leaf.size
    out = problem.scalar_output(duals)
    if not isinstance(out, Dual):
        return np.zeros(kk)  # the output does not depend on the inputs
    if out.size != 1:
        raise ValueError(f"f's checked output has shape {out.shape}; expected a scalar")
    return np.asarray(out.tangents, dtype=np.float64).reshape(kk)


def _compute_directional(problem: Any, family: Any, k: int) -> Any:
    """The derivatives along the check's own directions, ``<g, v_j>`` for j < family.k, in
    passes of up to k directions (fewer for large inputs: DIRECTIONAL_BLOCK_ELEMENTS), instead
    of the whole gradient: family.k passes' worth of work in place of n / k passes. Single
    gradient elements, which the comparison asks for to confirm a located error, come from a
    pass along their unit vectors."""
    from ._problem import DirectionalDerivatives

    leaves = problem.diff_leaves
    dtypes = _leaf_dtypes(leaves)
    total = int(sum(leaf.size for leaf in leaves))
    block = max(1, min(k, DIRECTIONAL_BLOCK_ELEMENTS // max(total, 1)))
    values = np.zeros(family.k)
    for start in range(0, family.k, block):
        stop = min(start + block, family.k)
        rows = np.empty((stop - start, total))
        for j in range(start, stop):
            rows[j - start] = family.vector(j)
        values[start:stop] = _pass_along(problem, leaves, dtypes, rows)

    def element(indices: list[int]) -> np.ndarray:
        rows = np.zeros((len(indices), total))
        rows[np.arange(len(indices)), np.asarray(indices, dtype=np.intp)] = 1.0
        return _pass_along(problem, leaves, dtypes, rows)

    return DirectionalDerivatives(values, dtypes, element)


def _applies(problem: Any) -> bool:
    return problem.size <= MAX_DEFAULT_SIZE and all(
        type(leaf) is np.ndarray and leaf.dtype.kind in "fiub" for leaf in problem.diff_leaves
    )


register_backend(
    "forward",
    _compute,
    applies=_applies,
    default=True,
    description=f"forward mode: dual numbers computed by the C core, chunks of "
    f"{DEFAULT_CHUNK_SIZE} directions; on by default up to {MAX_DEFAULT_SIZE} elements",
)
