"""NumPy functions written in Python around a user's callable or a least-squares solve
(``apply_along_axis``, ``piecewise``, ``polyfit``, ``unwrap``), for both AD engines.

Each is the function's own definition restated with operations the registry differentiates:
the user's callable is called on the engines' arrays, pieces are assigned into an engine array
(item assignment keeps derivatives), and ``polyfit`` is a scaled least-squares solve. Values are
NumPy's own where the composition could round differently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _primitives as P
from ._rules import CREATED_LIKE, engine_constant, register

__all__: list[str] = []


@register(np.apply_along_axis, kink="as func1d")
def _apply_along_axis(func1d: Callable[..., Any], axis: int, arr: Any, *args: Any, **kwargs: Any) -> Any:
    nd = np.ndim(P.value(arr))
    axis = int(axis) % max(nd, 1)
    if nd == 0:
        raise np.exceptions.AxisError(axis, nd)
    moved = np.moveaxis(arr, axis, -1)
    outer = np.shape(P.value(moved))[:-1]
    if not all(outer):
        raise ValueError("Cannot apply_along_axis when any iteration dimensions are 0")
    results = [func1d(moved[index], *args, **kwargs) for index in np.ndindex(*outer)]
    stacked = np.stack(results)
    inner = np.ndim(P.value(stacked)) - 1
    stacked = np.reshape(stacked, outer + np.shape(P.value(stacked))[1:])
    # func1d's output axes take the place of the axis it consumed
    return np.moveaxis(stacked, list(range(len(outer), len(outer) + inner)), list(range(axis, axis + inner)))


@register(np.piecewise, kink="each piece's own rule; where conditions overlap the last one wins")
def _piecewise(x: Any, condlist: Any, funclist: Any, *args: Any, **kw: Any) -> Any:
    xv = np.asarray(P.value(x))
    value = np.piecewise(xv, condlist, [f if not callable(f) else (lambda v, f=f: f(v, *args, **kw))
                                        for f in funclist])
    conds = condlist
    if isinstance(conds, np.ndarray) and conds.dtype == np.bool_ and conds.shape == xv.shape:
        conds = [conds]
    conds = [np.asarray(P.value(c), dtype=bool) for c in conds]
    if len(funclist) == len(conds) + 1:  # the last function is "otherwise"
        conds.append(~np.any(conds, axis=0))
    if len(funclist) != len(conds):
        raise ValueError(f"with {len(conds)} condition(s), either {len(conds)} or {len(conds) + 1} "
                         "functions are expected")
    y = np.zeros_like(x) if P.is_active(x) else np.zeros_like(xv, dtype=value.dtype)
    for cond, f in zip(conds, funclist):
        if not np.any(cond):
            continue
        if callable(f):
            piece = f(x[cond], *args, **kw)
            if P.is_active(piece) and not P.is_active(y):
                raise NotImplementedError("numpy.piecewise: a piece carries a derivative but x does not")
            y[cond] = piece
        else:
            y[cond] = f
    return P.with_value(y, value.astype(P.value(y).dtype)) if P.is_active(y) else value


@register(np.polyfit, kink="least squares (lstsq's rule); w, full and cov: NotImplementedError")
def _polyfit(x: Any, y: Any, deg: int, rcond: Any = None, full: bool = False, w: Any = None,
             cov: Any = False) -> Any:
    if full or cov is not False or w is not None:
        raise NotImplementedError("numpy.polyfit(..., full=/w=/cov=) is not supported by gradtest's AD engines")
    value = np.polyfit(P.value(x), P.value(y), deg, rcond)
    xs = x if P.is_active(x) else np.asarray(x, dtype=np.float64)
    ys = y if P.is_active(y) else np.asarray(y, dtype=np.float64)
    if rcond is None:
        rcond = np.size(P.value(x)) * np.finfo(np.float64).eps
    lhs = np.vander(xs * 1.0, int(deg) + 1)
    # NumPy scales the Vandermonde columns before solving; the same solve has the same rank
    scale = np.sqrt(np.sum(lhs * lhs, axis=0))
    coef = np.linalg.lstsq(lhs / scale, ys, rcond=rcond)[0]
    coef = (coef.T / scale).T
    return P.with_value(coef, value.astype(P.value(coef).dtype))


@register(np.unwrap, kink="the corrections are multiples of the period, constant: derivative 1")
def _unwrap(p: Any, discont: Any = None, axis: int = -1, *, period: float = 2 * np.pi) -> Any:
    value = np.unwrap(P.value(p), discont, axis, period=period)
    return P.with_value(p + (value - P.value(p)), value)


def _created_like(fn: Callable[..., Any]) -> Callable[..., Any]:
    def rule(shape: Any, *args: Any, like: Any = None, **kwargs: Any) -> Any:
        return engine_constant(like, fn(shape, *args, **P.values(kwargs)))
    return rule


def _full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C", **kwargs: Any) -> Any:
    return np.full(shape, P.value(fill_value), dtype, order, **kwargs)


for _f, _make in ((np.zeros, np.zeros), (np.ones, np.ones), (np.empty, np.empty), (np.full, _full)):
    register(_f, kink="with like= an AD array: an engine array of constants")(_created_like(_make))
    CREATED_LIKE.add(_f)
