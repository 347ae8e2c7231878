"""Derivative rules of NumPy functions that are compositions of other supported NumPy functions.

Each function here has the signature of the NumPy function it stands for and is written with
NumPy calls only, so that called on an engine's arrays (``Dual``, ``Tracked``) it runs through
the rules those calls already have, in both engines, and called on plain arrays it computes the
NumPy result. Nothing here knows a tangent or a cotangent: the derivative follows from the
composition. Which NumPy function each stands for is the table :data:`COMPOSITIONS`.

Conventions, where the composition decides a kink or an edge (documented once, here):

* the nan-reductions treat NaN elements as absent: their derivative is 0, and an all-NaN slice
  gives NumPy's value (NaN for nanmean/nanvar/nanstd, 0 for nansum, 1 for nanprod) with a NaN
  derivative for the mean/var/std (0/0) and 0 for the sum/product;
* ``nanmax``/``nanmin``/``ptp`` split ties evenly, as ``max``/``min`` do;
* ``heaviside(x, h0)``: derivative 0 in x everywhere (the jump at 0 is reported by the ground
  truth as a kink), 1 in h0 where x == 0;
* ``copysign(x, y)``: ``±1`` in x (the sign of the result's factor), 0 in y;
* ``sinc``: ``sinc'(0) = 0`` and ``sinc''(0) = -pi^2/3`` (a Taylor polynomial near 0);
* ``nan_to_num``: 1 where x is finite, 0 where it was replaced;
* ``partition``: the elements NumPy places at each position get its derivative (ties: the one
  NumPy's introselect picks);
* ``select``, ``where``-like functions: the conditions are constants (booleans).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _primitives as P
from ._rules import UFUNCS, nondifferentiable, register, register_ufunc

__all__ = ["COMPOSITIONS", "KINKS_MORE"]

primal = P.value
_is_tracked = P.is_active


def _normalize_axis(axis: Any, ndim: int) -> int:
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def _unsupported(name: str, what: str) -> NotImplementedError:
    return NotImplementedError(f"numpy.{name}({what}) is not supported by gradtest's AD engines")


def _no_out(name: str, out: Any) -> None:
    if out is not None:
        raise _unsupported(name, "..., out=...")


# ---- nan-reductions --------------------------------------------------------------------------


def _nan_zeroed(a: Any, fill: float) -> tuple[Any, np.ndarray]:
    mask = np.isnan(primal(a))
    return np.where(mask, fill, a), mask


def _extras(initial: Any, where: Any) -> dict[str, Any]:
    """The optional reduction arguments, passed on only when given (not every rule takes them)."""
    extra: dict[str, Any] = {} if initial is None else {"initial": initial}
    if where is not True:
        extra["where"] = where
    return extra


def nansum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
           initial: Any = None, where: Any = True) -> Any:
    _no_out("nansum", out)
    x, _ = _nan_zeroed(a, 0.0)
    return np.sum(x, axis=axis, dtype=dtype, keepdims=keepdims, **_extras(initial, where))


def nanprod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            initial: Any = None, where: Any = True) -> Any:
    _no_out("nanprod", out)
    x, _ = _nan_zeroed(a, 1.0)
    return np.prod(x, axis=axis, dtype=dtype, keepdims=keepdims, **_extras(initial, where))


def nancumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _no_out("nancumsum", out)
    x, _ = _nan_zeroed(a, 0.0)
    return np.cumsum(x, axis=axis, dtype=dtype)


def nancumprod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _no_out("nancumprod", out)
    x, _ = _nan_zeroed(a, 1.0)
    return np.cumprod(x, axis=axis, dtype=dtype)


def nanmean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            *, where: Any = True) -> Any:
    _no_out("nanmean", out)
    if where is not True:
        raise _unsupported("nanmean", "..., where=...")
    x, mask = _nan_zeroed(a, 0.0)
    count = np.sum(~mask, axis=axis, keepdims=keepdims)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(x, axis=axis, dtype=dtype, keepdims=keepdims) / count


def nanvar(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
           keepdims: bool = False, *, where: Any = True, mean: Any = None,
           correction: Any = None) -> Any:
    _no_out("nanvar", out)
    if where is not True or mean is not None:
        raise _unsupported("nanvar", "..., where=/mean=...")
    ddof = ddof if correction is None else correction
    x, mask = _nan_zeroed(a, 0.0)
    count = np.sum(~mask, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        centered = np.where(mask, 0.0, x - np.sum(x, axis=axis, keepdims=True) / count)
        sq = np.sum(centered * centered, axis=axis, keepdims=keepdims)
        divisor = np.maximum(count - ddof, 0)
        if not keepdims:
            divisor = np.squeeze(divisor, axis=axis) if axis is not None else divisor.reshape(())
        return sq / divisor


def nanstd(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
           keepdims: bool = False, *, where: Any = True, mean: Any = None,
           correction: Any = None) -> Any:
    _no_out("nanstd", out)
    return np.sqrt(nanvar(a, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims, where=where,
                          mean=mean, correction=correction))


def _nan_extreme(name: str, reduce: Callable[..., Any], fill: float) -> Callable[..., Any]:
    def rule(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False,
             initial: Any = None, where: Any = True) -> Any:
        _no_out(name, out)
        x, mask = _nan_zeroed(a, fill)
        value = reduce(x, axis=axis, keepdims=keepdims, **_extras(initial, where))
        # an all-NaN slice is NaN in NumPy (with a RuntimeWarning, which NumPy gives too)
        empty = np.all(mask, axis=axis, keepdims=keepdims)
        if np.any(empty):
            import warnings
            warnings.warn("All-NaN slice encountered", RuntimeWarning, stacklevel=3)
            value = np.where(empty, np.nan, value)
        return value

    rule.__name__ = name
    return rule


nanmax = _nan_extreme("nanmax", np.max, -np.inf)
nanmin = _nan_extreme("nanmin", np.min, np.inf)


def ptp(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    _no_out("ptp", out)
    return np.max(a, axis=axis, keepdims=keepdims) - np.min(a, axis=axis, keepdims=keepdims)


def average(a: Any, axis: Any = None, weights: Any = None, returned: bool = False, *,
            keepdims: bool = False) -> Any:
    if weights is None:
        avg = np.mean(a, axis=axis, keepdims=keepdims)
        if not returned:
            return avg
        count = np.size(primal(a)) / np.size(primal(avg))
        return avg, np.broadcast_to(np.asarray(count, dtype=np.result_type(primal(avg))), np.shape(primal(avg)))
    wshape = np.shape(primal(weights))
    ashape = np.shape(primal(a))
    if wshape != ashape:
        if axis is None:
            raise TypeError("Axis must be specified when shapes of a and weights differ.")
        if len(wshape) != 1:
            raise TypeError("1D weights expected when shapes of a and weights differ.")
        ax = _normalize_axis(axis, len(ashape))
        if wshape[0] != ashape[ax]:
            raise ValueError("Length of weights not compatible with specified axis.")
        shape = [1] * len(ashape)
        shape[ax] = wshape[0]
        weights = np.reshape(weights, tuple(shape))
    total = np.sum(a * weights, axis=axis, keepdims=keepdims)
    scl = np.sum(np.broadcast_to(weights, ashape) if wshape != ashape else weights, axis=axis,
                 keepdims=keepdims)
    if np.any(primal(scl) == 0.0):
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    avg = total / scl
    if returned:
        return avg, np.broadcast_to(scl, np.shape(primal(avg))) if np.shape(primal(scl)) != np.shape(primal(avg)) else scl
    return avg


# ---- elementwise functions -------------------------------------------------------------------


def copysign(x1: Any, x2: Any, out: Any = None, **kwargs: Any) -> Any:
    _no_out("copysign", out)
    flip = np.signbit(primal(x1)) != np.signbit(primal(x2))
    # x2 only decides the sign: it is held constant
    return np.where(flip, -x1, x1)


def heaviside(x1: Any, x2: Any, out: Any = None, **kwargs: Any) -> Any:
    _no_out("heaviside", out)
    x = primal(x1)
    step = np.heaviside(x, 0.0)
    if _is_tracked(x2):
        return np.where(x == 0, x2, step)
    return np.heaviside(x, x2)


def sinc(x: Any) -> Any:
    v = np.asarray(primal(x))
    # near 0, sin(pi x)/(pi x) is replaced by its Taylor polynomial, whose derivatives of every
    # order are right at 0 (sinc'(0) = 0, sinc''(0) = -pi^2/3); dividing would need a guard
    # whose second derivative is 0 there. Below |x| = 1e-2 the next term is under 1e-17.
    small = np.abs(v) < 1e-2
    safe = np.where(small, 1.0, x)
    big = np.sin(np.pi * safe) / (np.pi * safe)
    t = (np.pi * x) ** 2
    taylor = 1.0 - t / 6.0 + t * t / 120.0 - t * t * t / 5040.0
    y = np.where(small, taylor, big)
    return P.with_value(y, np.sinc(v)) if _is_tracked(y) else np.sinc(v)


def nan_to_num(x: Any, copy: bool = True, nan: float = 0.0, posinf: Any = None,
               neginf: Any = None) -> Any:
    v = primal(x)
    info = np.finfo(v.dtype if np.asarray(v).dtype.kind == "f" else np.float64)
    big = info.max if posinf is None else posinf
    small = -info.max if neginf is None else neginf
    finite = np.isfinite(v)
    fill = np.where(np.isnan(v), nan, np.where(v > 0, big, small)).astype(np.asarray(v).dtype)
    return np.where(finite, x, fill)


# ---- moving, selecting and repeating elements -----------------------------------------------


def rollaxis(a: Any, axis: int, start: int = 0) -> Any:
    n = np.ndim(primal(a))
    axis = _normalize_axis(axis, n)
    if start < 0:
        start += n
    if not 0 <= start < n + 1:
        raise np.exceptions.AxisError(f"'start' arg requires {-n} <= start < {n + 1}, but {start} was passed in")
    if axis < start:
        start -= 1
    if axis == start:
        return a[...]
    order = [i for i in range(n) if i != axis]
    order.insert(start, axis)
    return np.transpose(a, order)


def diagflat(v: Any, k: int = 0) -> Any:
    return np.diag(np.ravel(v), k)


def _split_points(length: int, indices_or_sections: Any, even: bool) -> list[tuple[int, int]]:
    """(start, stop) of each piece along an axis of ``length``, as np.split/np.array_split."""
    if np.ndim(indices_or_sections) == 0:
        sections = operator.index(indices_or_sections)
        if sections <= 0:
            raise ValueError("number sections must be larger than 0.")
        if even and length % sections:
            raise ValueError("array split does not result in an equal division")
        size, extra = divmod(length, sections)
        bounds = [0]
        for i in range(sections):
            bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [length]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        lo = min(max(lo + length if lo < 0 else lo, 0), length)
        hi = min(max(hi + length if hi < 0 else hi, 0), length)
        out.append((lo, max(lo, hi)))
    return out


def array_split(ary: Any, indices_or_sections: Any, axis: int = 0) -> list[Any]:
    n = np.ndim(primal(ary))
    ax = _normalize_axis(axis, n)
    pieces = []
    for lo, hi in _split_points(np.shape(primal(ary))[ax], indices_or_sections, even=False):
        index = (slice(None),) * ax + (slice(lo, hi),)
        pieces.append(ary[index])
    return pieces


def split(ary: Any, indices_or_sections: Any, axis: int = 0) -> list[Any]:
    n = np.ndim(primal(ary))
    ax = _normalize_axis(axis, n)
    _split_points(np.shape(primal(ary))[ax], indices_or_sections, even=True)  # NumPy's errors
    return array_split(ary, indices_or_sections, axis)


def hsplit(ary: Any, indices_or_sections: Any) -> list[Any]:
    if np.ndim(primal(ary)) == 0:
        raise ValueError("hsplit only works on arrays of 1 or more dimensions")
    return split(ary, indices_or_sections, 1 if np.ndim(primal(ary)) > 1 else 0)


def vsplit(ary: Any, indices_or_sections: Any) -> list[Any]:
    if np.ndim(primal(ary)) < 2:
        raise ValueError("vsplit only works on arrays of 2 or more dimensions")
    return split(ary, indices_or_sections, 0)


def dsplit(ary: Any, indices_or_sections: Any) -> list[Any]:
    if np.ndim(primal(ary)) < 3:
        raise ValueError("dsplit only works on arrays of 3 or more dimensions")
    return split(ary, indices_or_sections, 2)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(array: Any, pad_width: Any, mode: str = "constant", **kwargs: Any) -> Any:
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise _unsupported("pad", f"..., mode={mode!r}; supported: {', '.join(_PAD_MODES)}")
    allowed = {"constant": {"constant_values"}, "reflect": {"reflect_type"},
               "symmetric": {"reflect_type"}}.get(mode, set())
    extra = set(kwargs) - allowed
    if extra:
        raise ValueError(f"unsupported keyword arguments for mode '{mode}': {sorted(extra)}")
    if kwargs.get("reflect_type", "even") != "even":
        raise _unsupported("pad", "..., reflect_type='odd'")
    value = primal(array)
    ndim = np.ndim(value)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.intp), (ndim, 2))
    constants = np.broadcast_to(np.asarray(kwargs.get("constant_values", 0), dtype=object), (ndim, 2)) \
        if mode == "constant" else None
    out = array
    for ax in range(ndim):
        before, after = int(widths[ax, 0]), int(widths[ax, 1])
        if before == 0 and after == 0:
            continue
        length = np.shape(primal(out))[ax]
        if mode == "constant":
            source = np.pad(np.arange(length), (before, after), mode="constant", constant_values=-1)
            taken = np.take(out, np.maximum(source, 0), axis=ax) if length else None
            shape = [1] * ndim
            shape[ax] = source.size
            lo, hi = constants[ax]
            fill = np.where(np.arange(source.size) < before, float(lo), float(hi)).reshape(shape)
            keep = (source >= 0).reshape(shape)
            if taken is None:
                full = list(np.shape(primal(out)))
                full[ax] = source.size
                out = np.broadcast_to(fill, tuple(full)).astype(np.result_type(value, np.float64))
                continue
            out = np.where(keep, taken, fill.astype(np.result_type(primal(taken))))
        else:
            if length == 0:
                raise ValueError(f"can't extend empty axis {ax} using modes other than 'constant' or 'empty'")
            source = np.pad(np.arange(length), (before, after), mode=mode)
            out = np.take(out, source, axis=ax)
    return out


def cross(a: Any, b: Any, axisa: int = -1, axisb: int = -1, axisc: int = -1, axis: Any = None) -> Any:
    if axis is not None:
        axisa = axisb = axisc = axis
    a = np.moveaxis(a, axisa, -1)
    b = np.moveaxis(b, axisb, -1)
    na, nb = np.shape(primal(a))[-1], np.shape(primal(b))[-1]
    if na not in (2, 3) or nb not in (2, 3):
        raise ValueError("incompatible dimensions for cross product\n(dimension must be 2 or 3)")
    if na == 2 or nb == 2:
        raise _unsupported("cross", "of 2-element vectors (deprecated by NumPy 2.0)")
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    parts = [a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0]
    shape = np.broadcast_shapes(*(np.shape(primal(p)) for p in parts))
    c = np.stack([p if np.shape(primal(p)) == shape else np.broadcast_to(p, shape) for p in parts], axis=-1)
    return np.moveaxis(c, -1, axisc)


def kron(a: Any, b: Any) -> Any:
    sa, sb = np.shape(primal(a)), np.shape(primal(b))
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    # interleave: a's axes at even positions, b's at odd ones, then merge each pair
    a_ = np.reshape(a, tuple(d for s in sa for d in (s, 1)))
    b_ = np.reshape(b, tuple(d for s in sb for d in (1, s)))
    return np.reshape(a_ * b_, tuple(x * y for x, y in zip(sa, sb)))


def partition(a: Any, kth: Any, axis: Any = -1, kind: str = "introselect", order: Any = None) -> Any:
    if order is not None:
        raise _unsupported("partition", "..., order=...")
    if axis is None:
        a, axis = np.ravel(a), -1
    index = np.argpartition(primal(a), kth, axis=axis, kind=kind)
    return np.take_along_axis(a, index, axis=axis)


def select(condlist: Sequence[Any], choicelist: Sequence[Any], default: Any = 0) -> Any:
    if len(condlist) != len(choicelist):
        raise ValueError("list of cases must be same length as list of conditions")
    if len(condlist) == 0:
        raise ValueError("select with an empty condition list is not possible")
    conds = [np.asarray(primal(c)) for c in condlist]
    for i, c in enumerate(conds):
        if c.dtype != np.bool_:
            raise TypeError(f"invalid entry {i} in condlist: should be boolean ndarray")
    out = default
    # the first true condition wins, so apply them from the last to the first
    for cond, choice in zip(reversed(conds), reversed(list(choicelist))):
        out = np.where(cond, choice, out)
    return out


def linspace(start: Any, stop: Any, num: int = 50, endpoint: bool = True, retstep: bool = False,
             dtype: Any = None, axis: int = 0, *, device: Any = None) -> Any:
    num = operator.index(num)
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    div = (num - 1) if endpoint else num
    fraction = np.arange(num, dtype=np.float64)
    shape = np.broadcast_shapes(np.shape(primal(start)), np.shape(primal(stop)))
    fraction = fraction.reshape((-1,) + (1,) * len(shape))
    delta = stop - start
    if div > 0:
        step = delta / div
        y = start + fraction * step
        if endpoint and num > 1:
            last = np.reshape(stop * np.ones(shape), (1,) + shape)
            y = np.concatenate([y[:-1], last], axis=0)
    else:
        step = np.nan * delta
        y = start + fraction * delta
    if axis != 0:
        y = np.moveaxis(y, 0, axis)
    if dtype is not None:
        y = y.astype(dtype)
    return (y, step) if retstep else y


def gradient(f: Any, *varargs: Any, axis: Any = None, edge_order: int = 1) -> Any:
    if any(_is_tracked(v) for v in varargs):
        raise _unsupported("gradient", "with differentiated spacing or coordinates")
    n = np.ndim(primal(f))
    if axis is None:
        axes = list(range(n))
    elif np.ndim(axis) == 0:
        axes = [_normalize_axis(axis, n)]
    else:
        axes = [_normalize_axis(ax, n) for ax in axis]
    if len(varargs) == 0:
        spacing = [1.0] * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        spacing = [varargs[0]] * len(axes)
    elif len(varargs) == len(axes):
        spacing = list(varargs)
    else:
        raise TypeError("invalid number of arguments")
    if edge_order not in (1, 2):
        raise ValueError("'edge_order' greater than 2 not supported")
    outs = [_gradient_axis(f, ax, s, edge_order, n) for ax, s in zip(axes, spacing)]
    return outs[0] if len(outs) == 1 else tuple(outs)


def _gradient_axis(f: Any, ax: int, spacing: Any, edge_order: int, n: int) -> Any:
    """One axis of np.gradient: central differences inside, one-sided ones (first or second
    order) at the two ends, for a uniform step or for coordinates."""
    length = np.shape(primal(f))[ax]
    if length < edge_order + 1:
        raise ValueError("Shape of array too small to calculate a numerical gradient, "
                         "at least (edge_order + 1) elements are required.")

    def at(sl: Any) -> Any:
        return f[(slice(None),) * ax + (sl,)]

    def shaped(c: Any) -> Any:
        shape = [1] * n
        shape[ax] = -1
        return np.reshape(c, shape)

    if np.ndim(spacing) == 0:
        h = float(spacing)
        inner = (at(slice(2, None)) - at(slice(None, -2))) / (2.0 * h)
        if edge_order == 1:
            first = (at(slice(1, 2)) - at(slice(0, 1))) / h
            last = (at(slice(-1, None)) - at(slice(-2, -1))) / h
        else:
            first = (-1.5 / h) * at(slice(0, 1)) + (2.0 / h) * at(slice(1, 2)) + (-0.5 / h) * at(slice(2, 3))
            last = (0.5 / h) * at(slice(-3, -2)) + (-2.0 / h) * at(slice(-2, -1)) + (1.5 / h) * at(slice(-1, None))
    else:
        x = np.asarray(spacing, dtype=np.float64)
        if x.ndim != 1 or x.size != length:
            raise ValueError("when 1d, distances must match the length of the corresponding dimension")
        dx = np.diff(x)
        dx1, dx2 = dx[:-1], dx[1:]
        a = shaped(-dx2 / (dx1 * (dx1 + dx2)))
        b = shaped((dx2 - dx1) / (dx1 * dx2))
        c = shaped(dx1 / (dx2 * (dx1 + dx2)))
        inner = a * at(slice(None, -2)) + b * at(slice(1, -1)) + c * at(slice(2, None))
        if edge_order == 1:
            first = (at(slice(1, 2)) - at(slice(0, 1))) / dx[0]
            last = (at(slice(-1, None)) - at(slice(-2, -1))) / dx[-1]
        else:
            d1, d2 = dx[0], dx[1]
            first = (-(2.0 * d1 + d2) / (d1 * (d1 + d2))) * at(slice(0, 1)) + \
                ((d1 + d2) / (d1 * d2)) * at(slice(1, 2)) + (-d1 / (d2 * (d1 + d2))) * at(slice(2, 3))
            d1, d2 = dx[-2], dx[-1]
            last = (d2 / (d1 * (d1 + d2))) * at(slice(-3, -2)) + \
                (-(d2 + d1) / (d1 * d2)) * at(slice(-2, -1)) + \
                ((2.0 * d2 + d1) / (d2 * (d1 + d2))) * at(slice(-1, None))
    return np.concatenate([first, inner, last], axis=ax)


def append(arr: Any, values: Any, axis: Any = None) -> Any:
    if axis is None:
        arr = np.ravel(arr) if _is_tracked(arr) else np.ravel(np.asarray(arr))
        values = np.ravel(values) if _is_tracked(values) else np.ravel(np.asarray(values))
        axis = 0
    return np.concatenate((arr, values), axis=axis)


def _logaddexp_reduce(base: float) -> Callable[..., Any]:
    """``np.logaddexp.reduce`` (base e) or ``np.logaddexp2.reduce`` (base 2): a log-sum-exp
    shifted by the maximum, which is a constant (it only keeps exp in range)."""
    scale = np.log(base)

    def rule(array: Any, axis: Any = 0, dtype: Any = None, keepdims: bool = False,
             initial: Any = None, where: Any = True) -> Any:
        if initial is not None or where is not True or dtype is not None:
            raise _unsupported("logaddexp.reduce", "..., dtype=/initial=/where=")
        v = np.asarray(primal(array))
        axes = P.normalize_axes(axis, v.ndim)
        with np.errstate(invalid="ignore"):
            shift = np.max(v, axis=axes, keepdims=True)
        shift = np.where(np.isfinite(shift), shift, 0.0)
        y = np.log(np.sum(np.exp((array - shift) * scale), axis=axes, keepdims=True)) / scale + shift
        if not keepdims:
            y = np.squeeze(y, axis=axes)
        ufunc = np.logaddexp if base != 2.0 else np.logaddexp2
        value = ufunc.reduce(v, axis=axis, keepdims=keepdims)
        return P.with_value(y, np.asarray(value)) if P.is_active(y) else value

    return rule


def real(val: Any) -> Any:
    # gradtest's arrays are real: the real part is the array itself
    return val


def real_if_close(a: Any, tol: float = 100) -> Any:
    # a real array is returned as it is
    return a


def imag(val: Any) -> Any:
    # and the imaginary part is the constant 0
    return np.zeros(np.shape(primal(val)), dtype=np.asarray(primal(val)).dtype)


#: The NumPy function each composition stands for.
COMPOSITIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    np.nansum: nansum, np.nanprod: nanprod, np.nancumsum: nancumsum, np.nancumprod: nancumprod,
    np.nanmean: nanmean, np.nanvar: nanvar, np.nanstd: nanstd, np.nanmax: nanmax,
    np.nanmin: nanmin, np.ptp: ptp, np.average: average,
    np.copysign: copysign, np.heaviside: heaviside, np.sinc: sinc, np.nan_to_num: nan_to_num,
    np.rollaxis: rollaxis, np.diagflat: diagflat, np.split: split, np.array_split: array_split,
    np.hsplit: hsplit, np.vsplit: vsplit, np.dsplit: dsplit, np.pad: pad, np.cross: cross,
    np.kron: kron, np.partition: partition, np.select: select, np.linspace: linspace,
    np.gradient: gradient, np.append: append, np.real: real, np.imag: imag,
    np.real_if_close: real_if_close,
}


# ---- more functions users call: signal-like, statistics, polynomials, index tricks ---------


def _kept(y: Any, value: Any) -> Any:
    """y's derivative with NumPy's own value (a composition may round differently)."""
    value = np.asarray(value)
    if not P.is_active(y):
        return value
    return P.with_value(y, value.astype(P.value(y).dtype, copy=False))


def ldexp(x1: Any, x2: Any, out: Any = None, **kwargs: Any) -> Any:
    _no_out("ldexp", out)
    if _is_tracked(x2):
        raise _unsupported("ldexp", "x1, x2) with a differentiated integer exponent x2")
    # a power of two: exact, so the value is NumPy's
    return x1 * np.ldexp(1.0, x2).astype(np.asarray(primal(x1)).dtype)


def convolve(a: Any, v: Any, mode: str = "full") -> Any:
    va, vv = np.asarray(primal(a)), np.asarray(primal(v))
    if va.ndim != 1 or vv.ndim != 1:
        raise ValueError("object too deep for desired array")
    n, m = va.size, vv.size
    if n == 0 or m == 0:
        raise ValueError("a cannot be empty" if n == 0 else "v cannot be empty")
    value = np.convolve(va, vv, mode=mode)
    # full[k] = sum_j v[j] a[k - j]: one shifted copy of a per element of v
    terms = [np.pad(a, (j, m - 1 - j)) * v[j] for j in range(m)]
    full = terms[0]
    for t in terms[1:]:
        full = full + t
    short = min(n, m)
    if mode == "full":
        y = full
    elif mode == "same":
        lo = (short - 1) // 2
        y = full[lo: lo + max(n, m)]
    elif mode == "valid":
        y = full[short - 1: max(n, m)]
    else:
        raise ValueError(f"mode must be one of 'full', 'same' or 'valid', got {mode!r}")
    return _kept(y, value)


def correlate(a: Any, v: Any, mode: str = "valid") -> Any:
    value = np.correlate(np.asarray(primal(a)), np.asarray(primal(v)), mode=mode)
    return _kept(convolve(a, v[::-1], mode), value)


def trapezoid(y: Any, x: Any = None, dx: float = 1.0, axis: int = -1) -> Any:
    n = np.ndim(primal(y))
    ax = _normalize_axis(axis, n)

    def at(sl: slice) -> Any:
        return y[(slice(None),) * ax + (sl,)]

    if x is None:
        d = dx
    else:
        d = np.diff(x)
        if np.ndim(primal(x)) == 1 and n > 1:
            shape = [1] * n
            shape[ax] = -1
            d = np.reshape(d, shape)
    value = np.trapezoid(primal(y), x=primal(x), dx=dx, axis=axis)
    return _kept(np.sum(d * (at(slice(1, None)) + at(slice(None, -1))) / 2.0, axis=ax), value)


def interp(x: Any, xp: Any, fp: Any, left: Any = None, right: Any = None, period: Any = None) -> Any:
    if period is not None:
        raise _unsupported("interp", "with period=")
    xv, xpv = np.asarray(primal(x)), np.asarray(primal(xp))
    value = np.interp(xv, xpv, primal(fp), left=primal(left), right=primal(right))
    fp = fp if _is_tracked(fp) else np.asarray(fp, dtype=np.float64)
    xp = xp if _is_tracked(xp) else xpv.astype(np.float64)
    # the segment of each x is chosen on the values (piecewise: at a knot, the segment to its right)
    i = np.clip(np.searchsorted(xpv, xv, side="right") - 1, 0, xpv.size - 2)
    w = (x - xp[i]) / (xp[i + 1] - xp[i])
    y = fp[i] + w * (fp[i + 1] - fp[i])
    # outside [xp[0], xp[-1]]: the end values of fp, or left/right when given
    fp0 = fp[0] if left is None else left
    fp1 = fp[-1] if right is None else right
    y = np.where(xv < xpv[0], fp0, np.where(xv > xpv[-1], fp1, y))
    return _kept(y, value)


def cov(m: Any, y: Any = None, rowvar: bool = True, bias: bool = False, ddof: Any = None,
        fweights: Any = None, aweights: Any = None, *, dtype: Any = None) -> Any:
    if fweights is not None or aweights is not None:
        raise _unsupported("cov", "..., fweights=/aweights=")
    value = np.cov(primal(m), None if y is None else primal(y), rowvar=rowvar, bias=bias, ddof=ddof)
    x = np.atleast_2d(m)
    if not rowvar and np.shape(primal(x))[0] != 1:
        x = np.transpose(x)
    if y is not None:
        yy = np.atleast_2d(y)
        if not rowvar and np.shape(primal(yy))[0] != 1:
            yy = np.transpose(yy)
        x = np.concatenate([x, yy], axis=0)
    count = np.shape(primal(x))[1]
    ddof = (0 if bias else 1) if ddof is None else ddof
    xc = x - np.mean(x, axis=1, keepdims=True)
    c = (xc @ np.transpose(xc)) / (count - ddof)
    return _kept(np.squeeze(c), value)


def corrcoef(x: Any, y: Any = None, rowvar: bool = True, *, dtype: Any = None) -> Any:
    value = np.corrcoef(primal(x), None if y is None else primal(y), rowvar=rowvar)
    c = cov(x, y, rowvar=rowvar)
    if np.ndim(primal(c)) == 0:
        return _kept(c / c, value)
    d = np.sqrt(np.diagonal(c))
    return _kept(c / d[:, None] / d[None, :], value)


def quantile(a: Any, q: Any, axis: Any = None, out: Any = None, overwrite_input: bool = False,
             method: str = "linear", keepdims: bool = False, *, weights: Any = None) -> Any:
    _no_out("quantile", out)
    if method != "linear" or weights is not None or _is_tracked(q):
        raise _unsupported("quantile", "..., method other than 'linear', weights=, or a differentiated q")
    v = np.asarray(primal(a))
    value = np.quantile(v, q, axis=axis, method=method, keepdims=keepdims)
    if axis is None:
        x, ax = np.ravel(a), 0
    else:
        axes = P.normalize_axes(axis, v.ndim)
        if len(axes) != 1:
            raise _unsupported("quantile", "over several axes")
        x, ax = a, axes[0]
    s = np.sort(x, axis=ax)
    n = np.shape(primal(s))[ax]
    qv = np.asarray(q, dtype=np.float64)
    pos = qv * (n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(v.dtype if v.dtype.kind == "f" else np.float64)
    picks = []
    for k in np.ravel(np.arange(qv.size)):
        low = np.take(s, int(np.ravel(lo)[k]), axis=ax)
        high = np.take(s, int(np.ravel(hi)[k]), axis=ax)
        f = np.ravel(frac)[k]
        picks.append(low + f * (high - low))
    y = picks[0] if qv.ndim == 0 else np.reshape(np.stack(picks), qv.shape + np.shape(primal(picks[0])))
    if keepdims:
        if axis is None:
            y = np.reshape(y, qv.shape + (1,) * v.ndim)
        else:
            y = np.expand_dims(y, qv.ndim + ax)
    return _kept(y, value)


def percentile(a: Any, q: Any, axis: Any = None, out: Any = None, overwrite_input: bool = False,
               method: str = "linear", keepdims: bool = False, *, weights: Any = None) -> Any:
    return quantile(a, np.asarray(q) / 100.0, axis=axis, out=out, method=method, keepdims=keepdims,
                    weights=weights)


def median(a: Any, axis: Any = None, out: Any = None, overwrite_input: bool = False,
           keepdims: bool = False) -> Any:
    value = np.median(primal(a), axis=axis, keepdims=keepdims)
    return _kept(quantile(a, 0.5, axis=axis, out=out, keepdims=keepdims), value)


def polyval(p: Any, x: Any) -> Any:
    value = np.polyval(primal(p), primal(x))
    p = p if _is_tracked(p) else np.asarray(p, dtype=np.float64)
    # Horner's scheme, as NumPy evaluates it
    y = p[0] * np.ones(np.shape(primal(x)))
    for i in range(1, np.shape(primal(p))[0]):
        y = y * x + p[i]
    return _kept(y, value)


def vander(x: Any, N: Any = None, increasing: bool = False) -> Any:
    n = np.shape(primal(x))[0] if N is None else operator.index(N)
    powers = range(n) if increasing else range(n - 1, -1, -1)
    cols = [x ** k if k else np.ones(np.shape(primal(x))) for k in powers]
    return _kept(np.stack(cols, axis=1), np.vander(primal(x), N, increasing))


def meshgrid(*xi: Any, copy: bool = True, sparse: bool = False, indexing: str = "xy") -> Any:
    if indexing not in ("xy", "ij"):
        raise ValueError("Valid values for `indexing` are 'xy' and 'ij'.")
    ndim = len(xi)
    shapes = [np.size(primal(x)) for x in xi]
    out = []
    for i, x in enumerate(xi):
        shape = [1] * ndim
        shape[i] = -1
        out.append(np.reshape(x, shape))
    if indexing == "xy" and ndim > 1:
        out[0] = np.swapaxes(out[0], 0, 1)
        out[1] = np.swapaxes(out[1], 0, 1)
        shapes[0], shapes[1] = shapes[1], shapes[0]
    if not sparse:
        out = [np.broadcast_to(x, tuple(shapes)) for x in out]
        if copy:
            out = [x * 1.0 if _is_tracked(x) else np.array(x) for x in out]
    return tuple(out)


def delete(arr: Any, obj: Any, axis: Any = None) -> Any:
    if axis is None:
        arr, axis = np.ravel(arr), 0
    n = np.shape(primal(arr))[_normalize_axis(axis, np.ndim(primal(arr)))]
    return np.take(arr, np.delete(np.arange(n), obj), axis=axis)


def insert(arr: Any, obj: Any, values: Any, axis: Any = None) -> Any:
    if axis is not None and np.ndim(primal(arr)) != 1:
        raise _unsupported("insert", "..., axis=...) of a multidimensional array")
    flat = np.ravel(arr)
    n = np.shape(primal(flat))[0]
    count = np.insert(np.zeros(n), obj, np.ones(np.shape(primal(values)))).size - n
    vals = np.ravel(np.broadcast_to(values, (count,)) if np.size(primal(values)) != count else values)
    source = np.concatenate([flat, vals])
    index = np.insert(np.arange(n), obj, n + np.arange(count))
    return np.take(source, index)


def compress(condition: Any, a: Any, axis: Any = None, out: Any = None) -> Any:
    _no_out("compress", out)
    if axis is None:
        a, axis = np.ravel(a), 0
    return np.take(a, np.flatnonzero(np.asarray(primal(condition))), axis=axis)


def extract(condition: Any, arr: Any) -> Any:
    return np.take(np.ravel(arr), np.flatnonzero(np.ravel(np.asarray(primal(condition)))))


def choose(a: Any, choices: Sequence[Any], out: Any = None, mode: str = "raise") -> Any:
    _no_out("choose", out)
    if mode != "raise":
        raise _unsupported("choose", f"..., mode={mode!r}")
    index = np.asarray(primal(a))
    if index.size and (index.min() < 0 or index.max() >= len(choices)):
        raise ValueError("invalid entry in choice array")
    shape = np.broadcast_shapes(index.shape, *(np.shape(primal(c)) for c in choices))
    picked = choices[-1]
    for i in range(len(choices) - 2, -1, -1):
        picked = np.where(index == i, choices[i], picked)
    return picked if np.shape(primal(picked)) == shape else np.broadcast_to(picked, shape)


def resize(a: Any, new_shape: Any) -> Any:
    shape = (operator.index(new_shape),) if np.ndim(new_shape) == 0 else tuple(new_shape)
    flat = np.ravel(a)
    n = np.shape(primal(flat))[0]
    total = int(np.prod(shape, dtype=np.int64))
    if n == 0 or total == 0:
        return np.zeros(shape, dtype=np.asarray(primal(a)).dtype)
    return np.reshape(np.take(flat, np.arange(total) % n), shape)


def ediff1d(ary: Any, to_end: Any = None, to_begin: Any = None) -> Any:
    parts = [np.diff(np.ravel(ary))]
    if to_begin is not None:
        parts.insert(0, np.ravel(to_begin) if _is_tracked(to_begin) else np.ravel(np.asarray(to_begin, dtype=float)))
    if to_end is not None:
        parts.append(np.ravel(to_end) if _is_tracked(to_end) else np.ravel(np.asarray(to_end, dtype=float)))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _block_depth(x: Any) -> int:
    return 1 + _block_depth(x[0]) if isinstance(x, list) else 0


def block(arrays: Any) -> Any:
    depth = _block_depth(arrays)

    def leaves(x: Any) -> list[Any]:
        return [leaf for e in x for leaf in leaves(e)] if isinstance(x, list) else [x]

    ndim = max([depth] + [np.ndim(primal(leaf)) for leaf in leaves(arrays)])

    def build(x: Any, level: int) -> Any:
        if not isinstance(x, list):
            v = x if _is_tracked(x) else np.asarray(x, dtype=float)
            return np.reshape(v, (1,) * (ndim - np.ndim(primal(v))) + np.shape(primal(v)))
        return np.concatenate([build(e, level + 1) for e in x], axis=-(depth - level))

    return build(arrays, 0)


def vector_norm(x: Any, /, *, axis: Any = None, keepdims: bool = False, ord: Any = 2) -> Any:
    v = np.asarray(primal(x))
    value = np.linalg.vector_norm(v, axis=axis, keepdims=keepdims, ord=ord)
    axes = P.normalize_axes(axis, v.ndim)
    rest = [i for i in range(v.ndim) if i not in axes]
    moved = np.transpose(x, rest + list(axes))
    flat = np.reshape(moved, tuple(v.shape[i] for i in rest) + (-1,))
    y = np.linalg.norm(flat, ord=ord, axis=-1)
    if keepdims:
        y = np.reshape(y, tuple(1 if i in axes else v.shape[i] for i in range(v.ndim)))
    return _kept(y, value)


def matrix_norm(x: Any, /, *, keepdims: bool = False, ord: Any = "fro") -> Any:
    return np.linalg.norm(x, ord=ord, axis=(-2, -1), keepdims=keepdims)


def vecdot(x1: Any, x2: Any, /, *, axis: int = -1, **kwargs: Any) -> Any:
    return np.sum(x1 * x2, axis=axis)


def cumulative_sum(x: Any, /, *, axis: Any = None, dtype: Any = None, out: Any = None,
                   include_initial: bool = False) -> Any:
    _no_out("cumulative_sum", out)
    v = np.asarray(primal(x))
    if axis is None:
        if v.ndim > 1:
            raise ValueError("For arrays which have more than one dimension ``axis`` argument is required.")
        axis = 0
    y = np.cumsum(x, axis=axis)
    if include_initial:
        shape = list(v.shape)
        shape[_normalize_axis(axis, v.ndim)] = 1
        y = np.concatenate([np.zeros(shape, dtype=v.dtype), y], axis=axis)
    return y


def i0(x: Any) -> Any:
    import scipy.special  # i0' = i1, which NumPy does not have
    xv = np.asarray(primal(x))
    return P.pointwise(np.asarray(np.i0(xv)), [x], [np.asarray(scipy.special.i1(xv), dtype=np.i0(xv).dtype)],
                       "numpy.i0", partials_of=lambda t: [scipy.special.i1(t)])


def cond(x: Any, p: Any = None) -> Any:
    v = np.asarray(primal(x))
    value = np.linalg.cond(v, p)
    if p is None or p in (2, -2):
        s = np.linalg.svd(x, compute_uv=False)
        y = s[..., 0] / s[..., -1] if p != -2 else s[..., -1] / s[..., 0]
    else:
        y = np.linalg.norm(x, ord=p, axis=(-2, -1)) * np.linalg.norm(np.linalg.inv(x), ord=p, axis=(-2, -1))
    return _kept(y, value)


def lstsq(a: Any, b: Any, rcond: Any = None) -> Any:
    av, bv = np.asarray(primal(a)), np.asarray(primal(b))
    x0, res0, rank, s0 = np.linalg.lstsq(av, bv, rcond=rcond)
    m, n = av.shape
    if rank < n:
        raise _unsupported("lstsq", "of a rank-deficient matrix (its derivative does not exist where the "
                           "rank can change)")
    x = np.linalg.pinv(a) @ b
    if m > n:
        r = a @ x - b
        res = np.reshape(np.sum(r * r, axis=0), np.shape(res0))
        res = _kept(res, res0) if np.size(res0) else res0
    else:
        res = res0
    return _kept(x, x0), res, rank, _kept(np.linalg.svd(a, compute_uv=False), s0) if _is_tracked(a) else s0


def tensorinv(a: Any, ind: int = 2) -> Any:
    shape = np.shape(primal(a))
    if ind <= 0:
        raise ValueError("Invalid ind argument.")
    rows = int(np.prod(shape[:ind]))
    inv = np.linalg.inv(np.reshape(a, (rows, -1)))
    return np.reshape(inv, shape[ind:] + shape[:ind])


def tensorsolve(a: Any, b: Any, axes: Any = None) -> Any:
    if axes is not None:
        raise _unsupported("tensorsolve", "..., axes=...")
    bshape = np.shape(primal(b))
    shape = np.shape(primal(a))[len(bshape):]
    n = int(np.prod(bshape))
    x = np.linalg.solve(np.reshape(a, (n, -1)), np.ravel(b))
    return np.reshape(x, shape)


def _outer(ufunc: np.ufunc) -> Callable[..., Any]:
    def rule(a: Any, b: Any, **kwargs: Any) -> Any:
        nb = np.ndim(primal(b))
        return ufunc(np.reshape(a, np.shape(primal(a)) + (1,) * nb), b, **kwargs)

    return rule


MORE: dict[Callable[..., Any], Callable[..., Any]] = {
    np.ldexp: ldexp, np.convolve: convolve, np.correlate: correlate, getattr(np, 'trapezoid', None): trapezoid,
    np.interp: interp, np.cov: cov, np.corrcoef: corrcoef, np.quantile: quantile,
    np.percentile: percentile, np.median: median, np.polyval: polyval, np.vander: vander,
    np.meshgrid: meshgrid, np.delete: delete, np.insert: insert, np.compress: compress,
    np.extract: extract, np.choose: choose, np.resize: resize, np.ediff1d: ediff1d, np.block: block,
    getattr(np.linalg, 'vector_norm', None): vector_norm,
    getattr(np.linalg, 'matrix_norm', None): matrix_norm, getattr(np, 'vecdot', None): vecdot,
    getattr(np, 'cumulative_sum', None): cumulative_sum, np.i0: i0, np.linalg.cond: cond, np.linalg.lstsq: lstsq,
    np.linalg.tensorinv: tensorinv, np.linalg.tensorsolve: tensorsolve,
}
_KINKS_LATER = {
    np.interp: "kinks at the xp nodes (there: the segment to the right); x, xp, fp, left, right differentiated", np.quantile: "method='linear': kinks at ties",
    np.percentile: "method='linear': kinks at ties", np.median: "kinks at ties",
    np.linalg.lstsq: "full rank only (rank-deficient: NotImplementedError)",
    np.ldexp: "the exponent is an integer constant",
}

_NAN = "NaN elements are absent (derivative 0)"
#: The kink and edge rule of each composition, for the shared documentation table.
KINKS_MORE: dict[Callable[..., Any], str] = {
    np.nansum: _NAN, np.nanprod: _NAN + "; a tree of multiplies, exact at zeros",
    np.nancumsum: _NAN, np.nancumprod: _NAN,
    np.nanmean: _NAN + "; an all-NaN slice: NaN", np.nanvar: _NAN + "; ddof >= count: NaN",
    np.nanstd: _NAN + "; a constant slice: 0 (the chain rule's 0 * inf)",
    np.nanmax: _NAN + "; ties split evenly", np.nanmin: _NAN + "; ties split evenly",
    np.ptp: "max - min: ties split evenly",
    np.copysign: "+-1 in x1 (0 in x1 at x1 = 0 as abs), 0 in x2",
    np.heaviside: "0 in x1 (the jump at 0 is a kink); 1 in x2 where x1 == 0",
    np.sinc: "sinc'(0) = 0, sinc''(0) = -pi^2/3 (a Taylor polynomial near 0)", np.nan_to_num: "1 where finite, 0 where replaced",
    np.partition: "the element NumPy places at each position gets its derivative",
    np.select: "the conditions are piecewise constant",
    np.pad: "modes constant, edge, reflect, symmetric, wrap (others: NotImplementedError)",
    np.cross: "3-vectors (2-vectors, deprecated by NumPy: NotImplementedError)",
    np.gradient: "linear in f; spacing and coordinates are constants",
    np.imag: "real inputs: the constant 0",
}

register_ufunc(np.logaddexp, method="reduce", kink="the maximum shift is a constant")(
    _logaddexp_reduce(np.e))
register_ufunc(np.logaddexp2, method="reduce", kink="the maximum shift is a constant")(
    _logaddexp_reduce(2.0))

KINKS_MORE.update(_KINKS_LATER)
COMPOSITIONS.update({f: r for f, r in MORE.items() if f is not None})
nondifferentiable(np.angle, np.linalg.matrix_rank)
for (_u, _method), _r in list(UFUNCS.items()):
    # NumPy's own ufuncs only: SciPy's rules may install later, and the table must not depend on it
    if _method == "__call__" and _u.nin == 2 and _u.nout == 1 and _u.signature is None \
            and getattr(np, _u.__name__, None) is _u and (_u, "outer") not in UFUNCS:
        register_ufunc(_u, method="outer")(_outer(_u))

for _f, _rule in COMPOSITIONS.items():
    if isinstance(_f, np.ufunc):
        register_ufunc(_f, kink=KINKS_MORE.get(_f, ""))(_rule)
    else:
        register(_f, kink=KINKS_MORE.get(_f, ""))(_rule)
