"""Every NumPy function both AD engines support, with its derivative written once.

Each rule is either a composition of other supported NumPy functions (var, norm, tensordot, einsum,
prod, ...) or is written with the primitives of :mod:`gradtest._primitives`, which
:mod:`gradtest.forward` and :mod:`gradtest.reverse` implement. Both engines' ``__array_function__``
and ``__array_ufunc__`` dispatch through the one registry here (:data:`FUNCTIONS`,
:data:`UFUNCS`), so the modes support the same functions and cannot drift apart.

Kink and edge rules, written here once (docs/rules_table.inc lists them per function; it is
generated from :data:`KINKS` by :func:`rules_table`):

* the chain rule's ``0 * inf = 0`` (``gt_chain`` in ``csrc/core/ops.h``): a zero tangent or
  cotangent meeting an infinite partial contributes 0, so std of a constant slice and norm at 0
  have derivative 0;
* max/min and their reductions: tied elements share the derivative evenly (``1/m`` each); a NaN
  element is what NumPy returns, so the NaN elements get the derivative; elements beaten by
  ``initial=`` get none;
* var/std with ``ddof >= n``: NumPy divides by ``max(n - ddof, 0)`` = 0, giving inf or NaN; the
  derivative is NaN;
* prod and cumprod are trees of multiplies, exact at zeros and differentiable to any order.

Registering (the API colleagues' modules ``_rules_linalg``, ``_rules_special`` and ``_rules_more``
use; they are imported at the end of this module when present)::

    @register(np.linalg.inv, kink="...")
    def _inv(a): ...

    register_ufunc(scipy.special.gammaln)(rule)   # "__call__"; or method="reduce"
    nondifferentiable(np.argmax, ...)
"""

from __future__ import annotations

import importlib
import math
import string
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _primitives as P
from . import _reverse
from ._arraylike import public_name

__all__ = ["FUNCTIONS", "UFUNCS", "KINKS", "register", "register_ufunc", "nondifferentiable",
           "apply_function", "apply_ufunc", "unsupported", "rules_table"]

#: NumPy/SciPy callable -> its rule (called with the user's arguments).
FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {}
#: (ufunc, method) -> its rule; method is "__call__", "reduce" or "accumulate".
UFUNCS: dict[tuple[np.ufunc, str], Callable[..., Any]] = {}
#: public name -> its kink/edge rule in words (for the shared docs table).
KINKS: dict[str, str] = {}
#: callables (and ufuncs) that are piecewise constant or not numeric: run on the primal values.
NONDIFFERENTIABLE: set[Any] = set()


def register(*funcs: Any, kink: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the rule of each of ``funcs`` (None entries, for names a NumPy version lacks,
    are skipped).

    Parameters
    ----------
    *funcs : callable
        The NumPy/SciPy functions the decorated rule implements; it is called with their
        arguments, exactly as the user passed them.
    kink : str
        The function's kink or edge rule, for the documentation table ("" for a smooth one).

    Raises
    ------
    ValueError
        If a function already has a rule (a rule lives in one place).
    """
    def deco(rule: Callable[..., Any]) -> Callable[..., Any]:
        for f in dict.fromkeys(funcs):  # aliases (np.permute_dims is np.transpose) once
            if f is None:
                continue
            if f in FUNCTIONS or f in NONDIFFERENTIABLE:
                raise ValueError(f"{public_name(f)} already has a rule")
            FUNCTIONS[f] = rule
            KINKS[public_name(f)] = kink
        return rule
    return deco


def register_ufunc(*ufuncs: Any, method: str = "__call__", kink: str = "") -> Callable[..., Any]:
    """Decorator: the rule of ``ufunc.<method>`` for each of ``ufuncs`` (None skipped).

    The rule gets the ufunc's inputs and its keyword arguments except ``out`` (refused before
    the rule is called)."""
    def deco(rule: Callable[..., Any]) -> Callable[..., Any]:
        for u in ufuncs:
            if u is None:
                continue
            if (u, method) in UFUNCS or u in NONDIFFERENTIABLE:
                raise ValueError(f"{public_name(u, method)} already has a rule")
            UFUNCS[(u, method)] = rule
            KINKS[public_name(u, method)] = kink
        return rule
    return deco


def nondifferentiable(*funcs: Any) -> None:
    """Mark functions or ufuncs (None skipped) as piecewise constant or non-numeric: on engine
    arrays they run on the primal values and return plain NumPy results (every method of such a
    ufunc too)."""
    for f in funcs:
        if f is not None:
            if f in FUNCTIONS:
                raise ValueError(f"{public_name(f)} already has a rule")
            NONDIFFERENTIABLE.add(f)


def unsupported(obj: Any, mode: str, method: str = "__call__") -> NotImplementedError:
    """The error for a function without a rule, the same in both engines."""
    return NotImplementedError(f"gradtest's {mode} mode does not support {public_name(obj, method)}")


#: array creation functions that reach an engine only through ``like=`` (NumPy drops the
#: argument before calling ``__array_function__``, so the engine passes itself back as ``like``)
CREATED_LIKE: set[Any] = set()


def apply_function(func: Callable[..., Any], args: Any, kwargs: Any, mode: str, like: Any = None) -> Any:
    """An engine's ``__array_function__``: the rule of ``func``, or NotImplementedError naming it.
    ``like``: the engine array whose ``__array_function__`` was called."""
    rule = FUNCTIONS.get(func)
    if rule is not None:
        if func in CREATED_LIKE:
            return rule(*args, like=like, **kwargs)
        return rule(*args, **kwargs)
    if func in NONDIFFERENTIABLE:
        return func(*P.values(args), **P.values(kwargs))
    raise unsupported(func, mode)


_IGNORED_UFUNC_KWARGS = ("casting", "order", "subok")


def apply_ufunc(ufunc: np.ufunc, method: str, inputs: tuple[Any, ...], kwargs: dict[str, Any],
                mode: str) -> Any:
    """An engine's ``__array_ufunc__`` (past its C fast path): the rule of ``ufunc.method``."""
    if kwargs.get("out") is not None:
        raise NotImplementedError(
            f"{public_name(ufunc, method)}(..., out=...) on a gradtest {mode}-mode array: in-place "
            "output is not supported (it would overwrite values the derivative needs); assign "
            "the result instead"
        )
    if ufunc in NONDIFFERENTIABLE:
        call = ufunc if method == "__call__" else getattr(ufunc, method)
        kwargs = {k: v for k, v in kwargs.items() if not (k == "out" and v is None)}
        return call(*P.values(inputs), **P.values(kwargs))
    rule = UFUNCS.get((ufunc, method))
    if rule is None:
        raise unsupported(ufunc, mode, method)
    kw = {}
    for key, val in kwargs.items():
        if key == "out" or key in _IGNORED_UFUNC_KWARGS or (key == "where" and val is True):
            continue
        kw[key] = val
    return rule(*inputs, **kw)


# --------------------------------------------------------------------------------------------
# helpers shared by the rules
# --------------------------------------------------------------------------------------------


def _refuse(name: str, **unsupported_kwargs: Any) -> None:
    """NotImplementedError for keyword arguments given values the rules do not support."""
    for key, val in unsupported_kwargs.items():
        default = True if key == "where" else None
        if val is not default and val is not np._NoValue:
            raise NotImplementedError(f"numpy.{name}(..., {key}=...) is not supported on "
                                      "gradtest's AD arrays")


def _lift(x: Any) -> Any:
    """An engine array stays; a constant becomes an ndarray."""
    return x if P.is_active(x) else np.asarray(x)


def _float_target(name: str, dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise NotImplementedError(f"numpy.{name}(..., dtype={dt}) is not supported on gradtest's "
                                  "AD arrays (only float32 and float64 are differentiated)")
    return dt


def _count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    return math.prod(shape[ax] for ax in axes)


def extreme_weights(x: np.ndarray, peak: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """d max(x, axes) / dx, elementwise, given ``peak = max(x, axes, keepdims=True)`` (or min).

    Ties split evenly; NaN elements win (NumPy's max propagates NaN); where every element is
    beaten by ``initial=`` the weights are 0."""
    nan_peak = np.isnan(peak)
    mask = np.where(nan_peak, np.isnan(x), x == peak)
    count = np.sum(mask, axis=axes, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask, 1.0 / np.maximum(count, 1), 0.0).astype(x.dtype)


def var_scale(count: int, ddof: float) -> float:
    """The factor of ``sum((x - mean)**2)`` in var: ``1 / (count - ddof)``, NaN where NumPy's
    divisor ``max(count - ddof, 0)`` is 0 (NumPy's variance is then inf or NaN)."""
    divisor = count - ddof
    return 1.0 / divisor if divisor > 0 else float("nan")


def _moves(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The rule of a function of one array that only moves elements."""
    def rule(a: Any, *args: Any, **kwargs: Any) -> Any:
        return P.gather([_lift(a)], lambda ix: fn(ix, *args, **kwargs))
    rule.__name__ = f"moves_{fn.__name__}"
    return rule


def _moves_many(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The rule of a function of a sequence of arrays that only moves elements."""
    def rule(arrays: Any, *args: Any, dtype: Any = None, casting: Any = None, **kwargs: Any) -> Any:
        arrays = [_lift(x) for x in arrays]
        out = P.gather(arrays, lambda *ix: fn(list(ix), *args, **kwargs))
        return out if dtype is None else P.cast(out, _float_target(fn.__name__, dtype))
    rule.__name__ = f"moves_{fn.__name__}"
    return rule


# --------------------------------------------------------------------------------------------
# elementwise ufuncs
# --------------------------------------------------------------------------------------------

_OP_NAMES = frozenset(_reverse.op_indices())


def _table_rule(ufunc: np.ufunc) -> Callable[..., Any]:
    def rule(*inputs: Any, dtype: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            _refuse(ufunc.__name__, **kwargs)
        if dtype is not None:
            dt = _float_target(ufunc.__name__, dtype)
            inputs = tuple(P.cast(x, dt) for x in inputs)
        return P.elementwise(ufunc, *inputs)
    rule.__name__ = f"elementwise_{ufunc.__name__}"
    return rule


for _name in sorted(_OP_NAMES - {"sign"}):
    _uf = np.absolute if _name == "abs" else getattr(np, _name)
    register_ufunc(_uf, kink={
        "abs": "abs'(0) = 0",
        "maximum": "ties split evenly (1/2 each); NaN propagates",
        "minimum": "ties split evenly (1/2 each); NaN propagates",
        "fmax": "ties split evenly; the non-NaN argument gets the derivative",
        "fmin": "ties split evenly; the non-NaN argument gets the derivative",
        "power": "d/db a**b is 0 where a == 0, d/da a**b is 0 where b == 0",
        "remainder": "the smooth piece's derivative (floor(a/b) is piecewise constant)",
        "fmod": "the smooth piece's derivative (trunc(a/b) is piecewise constant)",
        "sqrt": "sqrt'(0) = inf (never clamped)",
        "log": "log'(0) = inf (never clamped)",
    }.get(_name, ""))(_table_rule(_uf))


@register_ufunc(np.fabs, kink="abs'(0) = 0")
def _fabs(x: Any, **kwargs: Any) -> Any:
    return np.absolute(x, **kwargs)


@register_ufunc(np.float_power)
def _float_power(a: Any, b: Any, dtype: Any = None) -> Any:
    f64 = np.dtype(np.float64)
    return np.power(P.cast(a, f64), P.cast(b, f64))


def _scaled(ufunc: np.ufunc, scale: float) -> Callable[..., Any]:
    def rule(x: Any, dtype: Any = None) -> Any:
        value = ufunc(P.value(x)) if dtype is None else ufunc(P.value(x), dtype=dtype)
        return P.pointwise(value, [x], [scale], ufunc.__name__, constant=True)
    return rule


for _uf, _s in ((np.deg2rad, np.pi / 180), (np.radians, np.pi / 180),
                (np.rad2deg, 180 / np.pi), (np.degrees, 180 / np.pi)):
    register_ufunc(_uf)(_scaled(_uf, _s))


@register_ufunc(np.conjugate)
def _conjugate(x: Any, **kwargs: Any) -> Any:
    return x  # real values only


_KINK_MATMUL = ("inf/NaN operands: the chain rule's 0 * inf = 0 per product term (up to 2**24 "
                "products; beyond, BLAS's NaN)")


@register_ufunc(np.matmul, kink=_KINK_MATMUL)
def _matmul_ufunc(a: Any, b: Any, **kwargs: Any) -> Any:
    _refuse("matmul", **kwargs)
    return matmul(a, b)


#: The most products matmul's exact path for inf/NaN operands materialises (beyond it BLAS).
_MATMUL_PRODUCTS_MAX = 1 << 24


def matmul(a: Any, b: Any) -> Any:
    """``a @ b``: the BLAS primitive, or, when an operand holds inf or NaN, the products and
    their sum, so that the chain rule's ``0 * inf = 0`` holds per term as for every other
    function (BLAS would spread ``0 * inf = NaN`` from every zero tangent or cotangent)."""
    a, b = _lift(a), _lift(b)
    av, bv = P.value(a), P.value(b)
    # a finite sum means every element is finite (inf or NaN anywhere makes it inf or NaN); an
    # overflowing sum only sends a finite operand down the exact path
    if math.isfinite(np.add.reduce(av, axis=None)) and math.isfinite(np.add.reduce(bv, axis=None)):
        return P.matmul(a, b)
    value = np.asarray(np.matmul(av, bv))  # NumPy's value and NumPy's shape errors
    if value.size * av.shape[-1] > _MATMUL_PRODUCTS_MAX:
        # too many products to hold: BLAS, whose 0 * inf = NaN shows as NaN derivatives (never
        # as a wrong finite one)
        return P.matmul(a, b)

    a2 = np.reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = np.reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    y = np.sum(np.expand_dims(a2, -1) * np.expand_dims(b2, -3), axis=-2)
    return P.with_value(np.reshape(y, value.shape), value)


nondifferentiable(*(getattr(np, name, None) for name in (
    "sign floor ceil trunc rint signbit isnan isinf isfinite greater greater_equal less "
    "less_equal equal not_equal logical_and logical_or logical_xor logical_not floor_divide "
    "spacing isnat bitwise_and bitwise_or bitwise_xor invert left_shift right_shift").split()))


# --------------------------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------------------------


def _where_mask(where: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """A ``where=`` argument as weights of x's shape (None for True)."""
    if where is True:
        return None
    mask = np.asarray(P.value(where))
    if mask.dtype != np.bool_:
        raise TypeError(f"where: expected booleans, got {mask.dtype}")
    return np.broadcast_to(mask, shape)


@register(np.sum, kink="where=: the masked-out elements' derivative is 0 (even where infinite)")
def _sum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
         initial: Any = None, where: Any = True) -> Any:
    if out is not None:
        _refuse("sum", out=out)
    x = _lift(a)
    if dtype is not None:
        x = P.cast(x, _float_target("sum", dtype))
    extra = {} if initial is None else {"initial": initial}
    if where is not True:
        extra["where"] = P.value(where)
    if not P.is_active(x):
        return np.sum(x, axis=axis, keepdims=keepdims, **extra)
    value = np.asarray(np.add.reduce(x.value, axis=axis, keepdims=keepdims, **extra))
    mask = _where_mask(where, x.shape)
    weights = None if mask is None else mask.astype(x.dtype)
    return P.reduce(x, P.normalize_axes(axis, x.ndim), keepdims, 1.0, weights, value)


@register(np.mean, kink="mean over an empty axis: NaN value and NaN derivative")
def _mean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          where: Any = True) -> Any:
    if out is not None:
        _refuse("mean", out=out)
    x = _lift(a)
    if dtype is not None:
        x = P.cast(x, _float_target("mean", dtype))
    if where is not True:
        # the sum of the selected elements over their count, which differs by output element
        mask = _where_mask(where, x.shape)
        with np.errstate(all="ignore"):
            value = np.asarray(np.mean(P.value(x), axis=axis, keepdims=keepdims, where=mask))
            count = np.sum(mask, axis=axis, keepdims=keepdims)
            total = _sum(x, axis=axis, keepdims=keepdims, where=mask)
            return P.with_value(total / count.astype(value.dtype), value)
    value = np.asarray(np.mean(P.value(x), axis=axis, keepdims=keepdims))
    axes = P.normalize_axes(axis, x.ndim)
    count = _count(x.shape, axes)
    return P.reduce(x, axes, keepdims, 1.0 / count if count else float("nan"), None, value)


def _extreme(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def rule(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False,
             initial: Any = None, where: Any = True, dtype: Any = None) -> Any:
        if out is not None or where is not True:
            _refuse(name, out=out, where=where)
        x = _lift(a)
        extra = {} if initial is None else {"initial": initial}
        if x.size == 0 and initial is None:
            fn(x.value, axis=axis, **extra)  # NumPy's error for an empty reduction
        axes = P.normalize_axes(axis, x.ndim)
        peak = np.asarray(fn(x.value, axis=axes, keepdims=True, **extra))
        value = peak if keepdims else peak.reshape([s for i, s in enumerate(peak.shape) if i not in axes])
        return P.reduce(x, axes, keepdims, 1.0, extreme_weights(x.value, peak, axes), value)
    rule.__name__ = name
    return rule


_KINK_EXTREME = "ties split evenly (1/m each); NaN elements get the derivative; initial= wins: 0"
register(np.max, np.amax, kink=_KINK_EXTREME)(_extreme(np.max, "max"))
register(np.min, np.amin, kink=_KINK_EXTREME)(_extreme(np.min, "min"))


def _lines(x: Any, axes: tuple[int, ...]) -> Any:
    """x with ``axes`` moved last and flattened into one axis."""
    end = tuple(range(x.ndim - len(axes), x.ndim))
    moved = np.moveaxis(x, axes, end) if axes != end else x
    lead = moved.shape[: x.ndim - len(axes)]
    return np.reshape(moved, lead + (_count(x.shape, axes),))


@register(np.prod, kink="a tree of multiplies: exact at zeros, any order")
def _prod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          initial: Any = None, where: Any = True) -> Any:
    _refuse("prod", out=out, where=where)
    x = _lift(a)
    if dtype is not None:
        x = P.cast(x, _float_target("prod", dtype))
    extra = {} if initial is None else {"initial": initial}
    value = np.asarray(np.prod(x.value, axis=axis, keepdims=keepdims, **extra))
    axes = P.normalize_axes(axis, x.ndim)
    y = _lines(x, axes)
    m = y.shape[-1]
    if m == 0:
        return value  # the empty product is the constant 1 (or initial)
    # pairwise halves: log2(m) levels of multiplies, whose partials are the other factors,
    # so the derivative is exact with zeros and differentiates again like any product
    while m > 1:
        h = m // 2
        pairs = y[..., :h] * y[..., h: 2 * h]
        y = np.concatenate([pairs, y[..., 2 * h:]], axis=-1) if m % 2 else pairs
        m = h + m % 2
    y = np.reshape(y, value.shape)
    if initial is not None:
        y = y * initial
    return P.with_value(y, value)


def _var_core(name: str, a: Any, axis: Any, dtype: Any, out: Any, ddof: float, keepdims: bool,
              where: Any, mean: Any, correction: Any) -> tuple[Any, float]:
    _refuse(name, out=out, where=where, mean=mean)
    x = _lift(a)
    if dtype is not None:
        x = P.cast(x, _float_target(name, dtype))
    if correction is not None and correction is not np._NoValue:
        ddof = correction
    axes = P.normalize_axes(axis, x.ndim)
    scale = var_scale(_count(x.shape, axes), ddof)
    value = np.asarray(np.var(P.value(x), axis=axis, ddof=ddof, keepdims=keepdims))
    if not np.isfinite(scale):
        # ddof >= n: NaN weights make every element's derivative NaN in both modes, whatever
        # the tangents or cotangents (a NaN coefficient would meet the chain rule's zeros)
        return P.reduce(x, axes, keepdims, 1.0, np.full(x.shape, np.nan, dtype=x.dtype), value), scale
    d = x - np.mean(x, axis=axes, keepdims=True)
    return P.reduce(d * d, axes, keepdims, scale, None, value), scale


_KINK_VAR = "ddof >= n: NaN derivative (NumPy's value is inf or NaN)"


@register(np.var, kink=_KINK_VAR)
def _var(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
         keepdims: bool = False, *, where: Any = True, mean: Any = None,
         correction: Any = None) -> Any:
    return _var_core("var", a, axis, dtype, out, ddof, keepdims, where, mean, correction)[0]


@register(np.std, kink=_KINK_VAR + "; a constant slice: 0 (the chain rule's 0 * inf)")
def _std(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
         keepdims: bool = False, *, where: Any = True, mean: Any = None,
         correction: Any = None) -> Any:
    var, scale = _var_core("std", a, axis, dtype, out, ddof, keepdims, where, mean, correction)
    value = np.sqrt(P.value(var))  # NumPy's std is exactly sqrt of its var
    if not np.isfinite(scale):
        # ddof >= n: the derivative stays var's NaN (sqrt'(inf) = 0 would hide it)
        return P.with_value(var, value)
    return P.with_value(np.sqrt(var), value)


@register(np.cumsum)
def _cumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _refuse("cumsum", out=out)
    x = _lift(a)
    if dtype is not None:
        x = P.cast(x, _float_target("cumsum", dtype))
    if axis is None or x.ndim == 0:
        x, axis = np.ravel(x), 0
    (ax,) = P.normalize_axes(axis, x.ndim)
    return P.cumsum(x, ax)


@register(np.cumprod, kink="a log-step scan of multiplies: exact at zeros, any order")
def _cumprod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _refuse("cumprod", out=out)
    x = _lift(a)
    if dtype is not None:
        x = P.cast(x, _float_target("cumprod", dtype))
    value = np.asarray(np.cumprod(x.value, axis=axis))
    if axis is None or x.ndim == 0:
        x, axis = np.ravel(x), 0
    (ax,) = P.normalize_axes(axis, x.ndim)
    y = np.moveaxis(x, ax, -1) if ax != x.ndim - 1 else x
    m, s = y.shape[-1], 1
    # Hillis-Steele scan: after the step of shift s, y[i] is the product of x[i-2s+1 .. i]
    while s < m:
        ones = np.ones(y.shape[:-1] + (s,), dtype=y.dtype)
        y = y * np.concatenate([ones, y[..., : m - s]], axis=-1)
        s *= 2
    y = np.moveaxis(y, -1, ax) if ax != x.ndim - 1 else y
    return P.with_value(y, value)


@register_ufunc(np.add, method="reduce")
def _add_reduce(a: Any, axis: Any = 0, dtype: Any = None, out: Any = None, keepdims: bool = False,
                **kw: Any) -> Any:
    return _sum(a, axis, dtype, out, keepdims, **kw)


@register_ufunc(np.multiply, method="reduce", kink="a tree of multiplies: exact at zeros")
def _multiply_reduce(a: Any, axis: Any = 0, dtype: Any = None, out: Any = None,
                     keepdims: bool = False, **kw: Any) -> Any:
    return _prod(a, axis, dtype, out, keepdims, **kw)


def _extreme_reduce(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    rule = _extreme(fn, name)

    def reduce_rule(a: Any, axis: Any = 0, dtype: Any = None, out: Any = None,
                    keepdims: bool = False, **kw: Any) -> Any:
        return rule(a, axis, out, keepdims, **kw)
    return reduce_rule


register_ufunc(np.maximum, method="reduce", kink=_KINK_EXTREME)(_extreme_reduce(np.max, "maximum.reduce"))
register_ufunc(np.minimum, method="reduce", kink=_KINK_EXTREME)(_extreme_reduce(np.min, "minimum.reduce"))


@register_ufunc(np.add, method="accumulate")
def _add_accumulate(a: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
    return _cumsum(a, axis, dtype, out)


@register_ufunc(np.multiply, method="accumulate", kink="a log-step scan of multiplies: exact at zeros")
def _multiply_accumulate(a: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
    return _cumprod(a, axis, dtype, out)


# --------------------------------------------------------------------------------------------
# shapes: reshape, or a gather of element indices
# --------------------------------------------------------------------------------------------


def _layout_order(x: Any, order: str) -> str:
    if order == "A":
        v = P.value(x)
        return "F" if v.flags.f_contiguous and not v.flags.c_contiguous else "C"
    if order not in ("C", "F"):
        raise NotImplementedError(f"numpy.reshape(..., order={order!r}) is not supported on "
                                  "gradtest's AD arrays")
    return order


@register(np.reshape)
def _reshape(a: Any, shape: Any = None, order: str = "C", *, newshape: Any = None,
             copy: Any = None) -> Any:
    x = _lift(a)
    shape = newshape if shape is None else shape
    order = _layout_order(x, order)
    target = np.reshape(np.empty(x.shape, dtype=np.bool_), shape).shape
    if order == "F":
        return P.gather([x], lambda ix: np.reshape(ix, target, order="F"))
    return P.reshape(x, target)


@register(np.ravel)
def _ravel(a: Any, order: str = "C") -> Any:
    return _reshape(a, (np.size(P.value(a)),), order=order)


@register(np.expand_dims)
def _expand_dims(a: Any, axis: Any) -> Any:
    x = _lift(a)
    return P.reshape(x, np.expand_dims(np.empty(x.shape, dtype=np.bool_), axis).shape)


@register(np.squeeze)
def _squeeze(a: Any, axis: Any = None) -> Any:
    x = _lift(a)
    return P.reshape(x, np.squeeze(np.empty(x.shape, dtype=np.bool_), axis).shape)


register(np.transpose, getattr(np, "permute_dims", None))(_moves(np.transpose))
for _f in ("swapaxes", "moveaxis", "flip", "fliplr", "flipud", "rot90", "roll", "tile", "repeat",
           "diagonal", "matrix_transpose"):
    if hasattr(np, _f):
        register(getattr(np, _f))(_moves(getattr(np, _f)))


@register(np.broadcast_to)
def _broadcast_to(array: Any, shape: Any, subok: bool = False) -> Any:
    return P.gather([_lift(array)], lambda ix: np.broadcast_to(ix, shape))


@register(np.broadcast_arrays)
def _broadcast_arrays(*args: Any, subok: bool = False) -> tuple[Any, ...]:
    shape = np.broadcast_shapes(*(np.shape(P.value(a)) for a in args))
    return tuple(_broadcast_to(a, shape) if P.is_active(a) else np.broadcast_to(a, shape)
                 for a in args)


def _atleast(fn: Callable[..., Any]) -> Callable[..., Any]:
    one = _moves(fn)

    def rule(*arys: Any) -> Any:
        out = [one(a) if P.is_active(a) else fn(a) for a in arys]
        return out[0] if len(out) == 1 else tuple(out)
    return rule


for _f in (np.atleast_1d, np.atleast_2d, np.atleast_3d):
    register(_f)(_atleast(_f))


@register(np.concatenate, getattr(np, "concat", None))
def _concatenate(arrays: Any, axis: Any = 0, out: Any = None, dtype: Any = None,
                 casting: str = "same_kind") -> Any:
    _refuse("concatenate", out=out)
    return _moves_many(np.concatenate)(arrays, axis=axis, dtype=dtype)


@register(np.stack)
def _stack(arrays: Any, axis: int = 0, out: Any = None, *, dtype: Any = None,
           casting: str = "same_kind") -> Any:
    _refuse("stack", out=out)
    return _moves_many(np.stack)(arrays, axis=axis, dtype=dtype)


for _f in (np.hstack, np.vstack, np.dstack, np.column_stack):
    register(_f)(_moves_many(_f))


@register(np.take)
def _take(a: Any, indices: Any, axis: Any = None, out: Any = None, mode: str = "raise") -> Any:
    _refuse("take", out=out)
    indices = P.value(indices)
    return P.gather([_lift(a)], lambda ix: np.take(ix, indices, axis=axis, mode=mode))


@register(np.take_along_axis)
def _take_along_axis(arr: Any, indices: Any, axis: Any = -1) -> Any:
    indices = np.asarray(P.value(indices))
    return P.gather([_lift(arr)], lambda ix: np.take_along_axis(ix, indices, axis=axis))


@register(np.sort, kink="ties keep their order (a stable permutation of the elements)")
def _sort(a: Any, axis: Any = -1, kind: Any = None, order: Any = None, *, stable: Any = None) -> Any:
    x = _lift(a)
    if axis is None:
        x, axis = np.ravel(x), -1
    perm = np.argsort(P.value(x), axis=axis, kind=kind, stable=stable)
    return P.gather([x], lambda ix: np.take_along_axis(ix, perm, axis=axis))


@register(np.where, kink="the condition is piecewise constant")
def _where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        return np.where(P.value(condition))
    cond = np.asarray(P.value(condition), dtype=bool)
    return P.gather([_lift(x) if P.is_active(x) or not isinstance(x, (int, float)) else x,
                     _lift(y) if P.is_active(y) or not isinstance(y, (int, float)) else y],
                    lambda ia, ib: np.where(cond, ia, ib))


def _tri(fn: Callable[..., Any]) -> Callable[..., Any]:
    def rule(m: Any, k: int = 0) -> Any:
        def select(ix: np.ndarray) -> np.ndarray:
            keep = fn(np.ones(ix.shape, dtype=bool), k)
            return np.where(keep, ix, P.FILL)
        return P.gather([_lift(m)], select)
    return rule


register(np.tril)(_tri(np.tril))
register(np.triu)(_tri(np.triu))


@register(np.diag)
def _diag(v: Any, k: int = 0) -> Any:
    x = _lift(v)
    if x.ndim != 1:
        return P.gather([x], lambda ix: np.diag(ix, k))

    def select(ix: np.ndarray) -> np.ndarray:
        n = ix.size + abs(k)
        out = np.full((n, n), P.FILL, dtype=np.intp)
        i = np.arange(ix.size)
        out[i + max(-k, 0), i + max(k, 0)] = ix
        return out
    return P.gather([x], select)


@register(np.diff)
def _diff(a: Any, n: int = 1, axis: int = -1, prepend: Any = np._NoValue,
          append: Any = np._NoValue) -> Any:
    x = _lift(a)
    (ax,) = P.normalize_axes(axis, x.ndim)
    parts = []
    for extra in (prepend, append):
        if extra is np._NoValue:
            parts.append(None)
            continue
        e = _lift(extra)
        if e.ndim == 0:
            shape = list(x.shape)
            shape[ax] = 1
            e = np.broadcast_to(e, tuple(shape))
        parts.append(e)
    if parts[0] is not None or parts[1] is not None:
        x = np.concatenate([p for p in (parts[0], x, parts[1]) if p is not None], axis=ax)
    for _ in range(n):
        hi = [slice(None)] * x.ndim
        lo = [slice(None)] * x.ndim
        hi[ax], lo[ax] = slice(1, None), slice(None, -1)
        x = x[tuple(hi)] - x[tuple(lo)]
    return x


def astype(x: Any, dtype: Any) -> Any:
    """The rule of ``x.astype(dtype)`` (both array types' method): float32/float64 stay
    differentiated; float16 rounds the values as NumPy does and computes in float32, like every
    float16 input; integer and boolean casts are piecewise constant (plain values); complex is
    refused as out of scope."""
    dt = np.dtype(dtype)
    if dt.kind == "c":
        raise TypeError(f"x.astype({dt}) on a gradtest AD array: complex values are out of scope "
                        "(gradtest differentiates real float32/float64 values)")
    if dt == np.float16:
        return P.with_value(P.cast(x, np.dtype(np.float32)),
                            P.value(x).astype(np.float16).astype(np.float32))
    if dt.kind == "f":
        return P.cast(x, dt)
    return P.value(x).astype(dt)


@register(np.copy)
def _copy(a: Any, order: str = "K", subok: bool = False) -> Any:
    return np.positive(a)  # a new array (forward's Dual is mutable), same values and derivative


@register(np.clip, kink="minimum(maximum(x, lo), hi): at a bound the derivative is 1/2")
def _clip(a: Any, a_min: Any = np._NoValue, a_max: Any = np._NoValue, out: Any = None, *,
          min: Any = np._NoValue, max: Any = np._NoValue, **kwargs: Any) -> Any:
    _refuse("clip", out=out, **kwargs)
    lo = min if a_min is np._NoValue else a_min
    hi = max if a_max is np._NoValue else a_max
    y = a
    if lo is not None and lo is not np._NoValue:
        y = np.maximum(y, lo)
    if hi is not None and hi is not np._NoValue:
        y = np.minimum(y, hi)
    return y


@register(np.trace)
def _trace(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None,
           out: Any = None) -> Any:
    _refuse("trace", out=out)
    return np.sum(np.diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


def engine_constant(like: Any, value: np.ndarray) -> Any:
    """``value`` as an array of ``like``'s engine holding constants (derivative 0), so that AD
    values assigned into it (the common ``out = np.zeros_like(x); out[i] = ...``) keep their
    derivatives; ``value`` itself where ``like`` is not an engine array or the dtype not float."""
    if not P.is_active(like) or value.dtype not in P._FLOAT_DTYPES:
        return value
    zero = P.gather([like], lambda ix: np.full(value.shape, P.FILL, dtype=np.intp))
    if P.value(zero).dtype != value.dtype:
        zero = P.cast(zero, value.dtype)
    return P.with_value(zero, value)


def _constant_like(fn: Callable[..., Any]) -> Callable[..., Any]:
    def rule(a: Any, *args: Any, **kwargs: Any) -> Any:
        return engine_constant(a, fn(P.value(a), *args, **P.values(kwargs)))
    return rule


for _f in (np.zeros_like, np.ones_like, np.empty_like, np.full_like):
    register(_f, kink="a constant of x's shape and dtype, as an engine array (values assigned into it keep their derivative)")(_constant_like(_f))


nondifferentiable(*(getattr(np, name, None) for name in (
    "argmax argmin argsort argwhere nonzero flatnonzero count_nonzero any all round around fix "
    "isrealobj iscomplexobj lexsort "
    "isclose allclose array_equal array_equiv shape ndim size result_type searchsorted "
    "isreal iscomplex isscalar digitize").split()))


# --------------------------------------------------------------------------------------------
# products: matmul is the primitive, the rest compose it
# --------------------------------------------------------------------------------------------


@register(np.matmul, kink=_KINK_MATMUL)
def _matmul(a: Any, b: Any, out: Any = None, **kwargs: Any) -> Any:
    _refuse("matmul", out=out, **kwargs)
    return matmul(a, b)


def _tensordot_axes(a: Any, b: Any, axes: Any) -> tuple[list[int], list[int]]:
    if np.ndim(axes) == 0:
        n = int(axes)
        return list(range(a.ndim - n, a.ndim)), list(range(n))
    axes_a, axes_b = axes
    axes_a = [axes_a] if np.ndim(axes_a) == 0 else list(axes_a)
    axes_b = [axes_b] if np.ndim(axes_b) == 0 else list(axes_b)
    return [int(i) % max(a.ndim, 1) for i in axes_a], [int(i) % max(b.ndim, 1) for i in axes_b]


def _transposed(x: Any, perm: list[int]) -> Any:
    return x if perm == list(range(len(perm))) else np.transpose(x, perm)


@register(np.tensordot)
def _tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    a, b = _lift(a), _lift(b)
    axes_a, axes_b = _tensordot_axes(a, b, axes)
    if len(axes_a) != len(axes_b) or any(a.shape[i] != b.shape[j] for i, j in zip(axes_a, axes_b)):
        raise ValueError("shape-mismatch for sum")
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    # explicit sizes, not -1, which cannot be resolved for a zero-size operand
    m, k, n = (_count(s, tuple(ax)) for s, ax in ((a.shape, free_a), (a.shape, axes_a),
                                                   (b.shape, free_b)))
    y = np.matmul(np.reshape(_transposed(a, free_a + axes_a), (m, k)),
                  np.reshape(_transposed(b, axes_b + free_b), (k, n)))
    return np.reshape(y, tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b))


@register(np.dot)
def _dot(a: Any, b: Any, out: Any = None) -> Any:
    _refuse("dot", out=out)
    a, b = _lift(a), _lift(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    if b.ndim <= 2:
        return np.matmul(a, b)
    return _tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 2]))


@register(np.inner)
def _inner(a: Any, b: Any) -> Any:
    a, b = _lift(a), _lift(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    return _tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 1]))


@register(np.outer)
def _outer(a: Any, b: Any, out: Any = None) -> Any:
    _refuse("outer", out=out)
    return np.multiply(np.reshape(_lift(a), (-1, 1)), np.reshape(_lift(b), (1, -1)))


@register(np.vdot)
def _vdot(a: Any, b: Any) -> Any:
    y = np.sum(np.multiply(np.ravel(_lift(a)), np.ravel(_lift(b))))
    return P.with_value(y, np.asarray(np.vdot(P.value(a), P.value(b))))


def _einsum_parse(operands: tuple[Any, ...]) -> tuple[list[str], str, list[Any]]:
    """Subscripts with '...' expanded into letters, the output, and the operands."""
    if operands and isinstance(operands[0], str):
        spec, arrays = operands[0].replace(" ", ""), list(operands[1:])
    else:
        # the sublist form: op, sublist, op, sublist, ..., [output sublist]
        ops = list(operands)
        out_list = ops.pop() if len(ops) % 2 else None
        letters = string.ascii_letters

        def sub(s: Any) -> str:
            return "".join("..." if i is Ellipsis else letters[int(i)] for i in s)
        arrays = ops[0::2]
        spec = ",".join(sub(s) for s in ops[1::2])
        if out_list is not None:
            spec += "->" + sub(out_list)
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(arrays):
        raise ValueError("einsum: more operands than subscripts" if len(arrays) > len(terms) else
                         "einsum: fewer operands than subscripts")
    used = set(spec)
    spare = [c for c in string.ascii_letters if c not in used]
    ell_n = max((np.ndim(P.value(x)) - (len(t) - 3) for t, x in zip(terms, arrays) if "..." in t),
                default=0)
    ell = "".join(spare[:ell_n])
    expanded = []
    for t, x in zip(terms, arrays):
        if "..." in t:
            n = np.ndim(P.value(x)) - (len(t) - 3)
            t = t.replace("...", ell[ell_n - n:] if n else "")
        expanded.append(t)
    if arrow:
        output = output.replace("...", ell)
    else:
        letters = "".join(expanded)
        output = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    return expanded, output, arrays


@register(np.einsum)
def _einsum(*operands: Any, out: Any = None, optimize: Any = False, **kwargs: Any) -> Any:
    _refuse("einsum", out=out, **kwargs)
    terms, output, arrays = _einsum_parse(operands)
    value = np.asarray(np.einsum(",".join(terms) + "->" + output, *[P.value(x) for x in arrays]))
    ops = []
    for t, x in zip(terms, arrays):
        x = _lift(x)
        if len(t) != x.ndim:
            raise ValueError(f"einsum: operand {t!r} has {x.ndim} dimensions")
        if len(set(t)) != len(t):
            # a repeated letter takes a diagonal: a gather (einsum on indices does not sum here)
            u = "".join(dict.fromkeys(t))
            x = P.gather([x], lambda ix, t=t, u=u: np.einsum(f"{t}->{u}", ix))
            t = u
        ops.append((t, x))
    # contract left to right, each step summing the letters no later operand or output needs
    while True:
        reduced = []
        for i, (t, x) in enumerate(ops):
            others = "".join(s for j, (s, _) in enumerate(ops) if j != i) + output
            drop = tuple(j for j, c in enumerate(t) if c not in others)
            if drop:
                x = np.sum(x, axis=drop)
                t = "".join(c for j, c in enumerate(t) if j not in drop)
            reduced.append((t, x))
        ops = reduced
        if len(ops) == 1:
            break
        (ta, a), (tb, b) = ops[0], ops[1]
        later = "".join(s for s, _ in ops[2:]) + output
        size = {c: a.shape[i] for i, c in enumerate(ta)}
        for i, c in enumerate(tb):
            if c in size and size[c] != b.shape[i]:
                raise ValueError(f"einsum: dimension {c!r} differs between the operands")
            size[c] = b.shape[i]
        batch = [c for c in ta if c in tb and c in later]
        contract = [c for c in ta if c in tb and c not in later]
        fa = [c for c in ta if c not in tb]
        fb = [c for c in tb if c not in ta]
        nb, m, k, n = (_count(tuple(size[c] for c in g), tuple(range(len(g))))
                       for g in (batch, fa, contract, fb))
        at = np.reshape(_transposed(a, [ta.index(c) for c in batch + fa + contract]), (nb, m, k))
        bt = np.reshape(_transposed(b, [tb.index(c) for c in batch + contract + fb]), (nb, k, n))
        order = batch + fa + fb
        y = np.reshape(np.matmul(at, bt), tuple(size[c] for c in order))
        ops = [("".join(order), y)] + ops[2:]
    t, x = ops[0]
    y = _transposed(x, [t.index(c) for c in output])
    return P.with_value(y, value) if P.is_active(y) else value


_KINK_NORM = "at 0: derivative 0 (the chain rule's 0 * inf); ord=inf/-inf: ties split evenly"


@register(np.linalg.norm, kink=_KINK_NORM)
def _norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    x = _lift(x)
    value = np.asarray(np.linalg.norm(P.value(x), ord=ord, axis=axis, keepdims=keepdims))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    nd = len(axis) if axis is not None else x.ndim
    if ord is None or (ord == "fro" and nd == 2) or (ord == 2 and nd == 1):
        y = np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))
    elif nd == 1 and not isinstance(ord, str):
        a = np.abs(x)
        if ord == np.inf:  # initial=0 as NumPy: an empty vector's norm is 0
            y = np.max(a, axis=axis, keepdims=keepdims, initial=0.0)
        elif ord == -np.inf:
            y = np.min(a, axis=axis, keepdims=keepdims)
        elif ord == 0:
            return value  # the count of non-zeros: piecewise constant
        elif ord == 1:
            y = np.sum(a, axis=axis, keepdims=keepdims)
        else:
            y = np.sum(a ** ord, axis=axis, keepdims=keepdims) ** (1.0 / ord)
    elif nd == 2 and ord in (1, -1, np.inf, -np.inf):
        row, col = tuple(i % x.ndim for i in (axis if axis is not None else (0, 1)))
        if ord in (np.inf, -np.inf):
            row, col = col, row
        sums = np.sum(np.abs(x), axis=row, keepdims=True)
        red = np.max if ord in (1, np.inf) else np.min
        y = red(sums, axis=col, keepdims=True)
        if not keepdims:
            y = np.squeeze(y, axis=(row, col))
    else:
        raise NotImplementedError(f"numpy.linalg.norm(..., ord={ord!r}) is not supported on "
                                  "gradtest's AD arrays")
    return P.with_value(y, value) if P.is_active(y) else value


# --------------------------------------------------------------------------------------------
# the shared documentation table
# --------------------------------------------------------------------------------------------


#: The rules every function follows, for the head of the documentation table.
GENERAL_RULES = """\
Both engines read these rules from one registry (``gradtest._rules``), so forward and reverse
mode support the same functions and give the same derivatives; ``tests/test_engine_agreement.py``
runs every entry on ties, zeros, NaN, inf, constant slices, 0-d and zero-size arrays, float32 and
strided views, against each other, finite differences and NumPy's primal. Rules that hold for
every function:

* the chain rule (``gt_chain`` in ``csrc/core/ops.h``): a zero tangent or cotangent meeting an
  infinite partial, or a zero partial meeting an infinite one, contributes 0 (``0 * inf = 0``),
  so ``std`` of a constant slice and ``linalg.norm`` at 0 have derivative 0 in both modes; a
  genuine infinite partial (``sqrt'(0)``) is kept where the tangent is not zero;
* primal values are NumPy's own, bit for bit (compositions such as ``var`` or ``prod`` return
  NumPy's value with the composition's derivative);
* NumPy's broadcasting and type promotion (a Python float keeps float32 float32);
* in-place output (``out=``), ``where=`` masks and complex values are not supported and raise;
* a function not listed raises ``NotImplementedError`` naming its real module
  (``gradtest's reverse mode does not support numpy.fft.fft``), the same in both modes.
* second order (``gradtest.reverse.hvp``, ``check_gradients(order=2)``): every function listed
  has one in reverse mode, with the kink rules carried to the second derivative; the rules whose
  derivative is computed from values (``numpy.linalg``, ``scipy.linalg.expm``/``sqrtm``/
  ``solve_sylvester``, the ``scipy.special`` functions) recompute it from the recorded values
  (docs/reverse.rst, "Hessian-vector products"). At repeated eigenvalues or singular values,
  where the vectors have no derivative, the second order of the factorizations (also of
  ``eigvalsh`` and ``svdvals``, which go through the vectors) comes out NaN, not a number.

Known difference: on blocks whose partials are all finite, forward's C kernel (``dual.c``)
multiplies plainly, so a zero partial meeting a tangent that is already inf or NaN (an earlier
op at inf/NaN input) gives NaN in forward where reverse gives 0; the agreement suite lists the
cases it shows (``FORWARD_KERNEL_NAN``).
"""


def rules_table() -> str:
    """The reStructuredText of docs/rules_table.inc: the general rules and a table of every
    supported function with its kink rule (both engines). Tests check the file is up to date."""
    rows = sorted(KINKS.items())
    plain = sorted({public_name(f) for f in NONDIFFERENTIABLE})
    name_w = max(len("Function"), *(len(f"``{n}``") for n, _ in rows))
    kink_w = max(len("Kink and edge rules"), *(len(k or "smooth") for _, k in rows))
    bar = "=" * name_w + " " + "=" * kink_w
    lines = [
        ".. This file is generated by ``python -m gradtest._rules > docs/rules_table.inc`` from the",
        "   registry in python/gradtest/_rules.py; tests/test_engine_agreement.py checks it is current.",
        "",
        GENERAL_RULES,
        bar, f"{'Function':<{name_w}} Kink and edge rules", bar,
    ]
    lines += [f"{'``' + n + '``':<{name_w}} {k or 'smooth'}" for n, k in rows]
    lines += [bar, "", "Piecewise constant or non-numeric (run on the primal values, no derivative): "
              + ", ".join(f"``{n}``" for n in plain) + ".", ""]
    return "\n".join(lines)


# the rules of numpy.linalg, SciPy and the remaining compositions register through the API above
for _module in ("_rules_linalg", "_rules_special", "_rules_more", "_rules_scatter", "_rules_python"):
    importlib.import_module(f"gradtest.{_module}")

if __name__ == "__main__":
    # run as a script this module is __main__, a second copy; the table is the package's registry's
    from gradtest import _rules as _registry

    print(_registry.rules_table(), end="")
