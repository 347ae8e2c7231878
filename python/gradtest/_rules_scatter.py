"""Sums by segment (``np.bincount`` with weights, ``np.histogram``, ``np.add.at``) and
``np.unique``, written once for both AD engines on the gather primitive.

These were silent zeros before: the functions ran on the primal values as if piecewise
constant, but a histogram's weights, its density and its edges, and the values ``np.unique``
returns, depend smoothly on the inputs.

A segment sum ``y[s] = sum(x[i] for i with segment[i] == s)`` is a stable sort of the elements by
segment followed by a segmented Hillis-Steele scan: ``ceil(log2(L))`` steps (L the largest
segment) of a gather and an add, and a gather of each segment's last element. Every element's
derivative reaches its segment's sum with coefficient exactly 1 in both engines and at every
order, and the cost is O(n log L) where a dense 0/1 matrix would cost O(n x segments). The
values returned are NumPy's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _primitives as P
from ._rules import register, register_ufunc

__all__: list[str] = []


def segment_sum(x: Any, segments: np.ndarray, count: int, dtype: np.dtype | None = None) -> Any:
    """``y[s] = sum of x.flat[i] over segments.flat[i] == s`` for ``s < count``, shape ``(count,)``.

    ``segments``: plain integers of x's size, -1 for an element that is dropped. ``dtype``: the
    sum's dtype (x's by default). Empty segments are the constant 0."""
    flat = np.reshape(x, (-1,))
    if dtype is not None and P.value(flat).dtype != dtype:
        flat = P.cast(flat, dtype)
    seg = np.asarray(segments, dtype=np.intp).reshape(-1)
    order = np.argsort(seg, kind="stable")
    order = order[seg[order] >= 0]
    sorted_seg = seg[order]
    # each sorted element's segment start, and the scan's steps
    start = np.searchsorted(sorted_seg, sorted_seg, side="left")
    scan = P.gather([flat], lambda ix: ix[order])
    position = np.arange(order.size)
    longest = int(np.max(position - start)) + 1 if order.size else 0
    step = 1
    while step < longest:
        source = position - step
        inside = source >= start
        picked = np.maximum(source, 0)
        scan = scan + P.gather([scan], lambda ix: np.where(inside, ix[picked], P.FILL))
        step *= 2
    present = np.zeros(count, dtype=bool)
    present[sorted_seg] = True
    last = np.searchsorted(sorted_seg, np.arange(count), side="right") - 1
    return P.gather([scan], lambda ix: np.where(present, ix[np.maximum(last, 0)] if ix.size else P.FILL,
                                                P.FILL))


@register(np.bincount, kink="in the weights (the integer input is a constant)")
def _bincount(x: Any, weights: Any = None, minlength: int = 0) -> Any:
    value = np.bincount(P.value(x), None if weights is None else P.value(weights), minlength)
    if not P.is_active(weights) or value.dtype.kind != "f":
        return value  # counts of a constant integer array (NumPy's result for no elements too)
    w = weights
    if np.shape(P.value(w)) != np.shape(x):
        raise ValueError("The weights and list don't have the same length.")
    return P.with_value(segment_sum(w, np.asarray(x), value.size, np.dtype(np.float64)), value)


def _edges(a: Any, bins: Any, range: Any, weights: Any) -> tuple[np.ndarray, Any]:
    """NumPy's bin edges, and the same edges as an engine array where they depend on a (a count
    of bins, or a rule's name, with no range: ``linspace(min(a), max(a))``), else None."""
    av = P.value(a)
    value = np.histogram_bin_edges(av, bins, range, None if weights is None else P.value(weights))
    if range is not None or np.ndim(bins) != 0 or not P.is_active(a) or av.size == 0:
        return value, None
    lo, hi = np.min(a), np.max(a)
    if P.value(lo) == P.value(hi):  # NumPy widens a single value to a bin of width 1
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, value.size)
    if P.value(edges).dtype != value.dtype:
        edges = P.cast(edges, value.dtype)
    return value, P.with_value(edges, value)


def _bin_index(av: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each element's bin as NumPy counts it (the last bin closed), -1 outside the edges."""
    n = edges.size - 1
    idx = np.searchsorted(edges, av.reshape(-1), side="right") - 1
    idx[av.reshape(-1) == edges[-1]] = n - 1
    idx[(idx < 0) | (idx >= n)] = -1
    return idx


@register(np.histogram, kink="the counts are piecewise constant in a; the weights' sums, the "
          "density and edges from min(a)/max(a) (bins a count, no range) carry derivatives")
def _histogram(a: Any, bins: Any = 10, range: Any = None, density: Any = None, weights: Any = None) -> Any:
    av = P.value(a)
    wv = None if weights is None else P.value(weights)
    value = np.histogram(av, bins, range, density, wv)[0]
    edges_value, edges = _edges(a, bins, range, weights)
    counts: Any = np.histogram(av, bins, range, False, wv)[0] if density else value
    if P.is_active(weights):
        if np.shape(wv) != av.shape:
            raise ValueError("weights should have the same shape as a.")
        counts = segment_sum(weights, _bin_index(av, edges_value), edges_value.size - 1,
                             np.result_type(wv.dtype, np.float64) if wv.dtype.kind != "f" else None)
    hist = counts
    if density:
        width = np.diff(edges if edges is not None else edges_value)
        hist = counts / width / np.sum(counts)
    if P.is_active(hist):
        hist = P.with_value(P.cast(hist, value.dtype) if P.value(hist).dtype != value.dtype else hist, value)
    else:
        hist = value
    return hist, (edges if edges is not None else edges_value)


@register(np.histogram_bin_edges, kink="linspace(min(a), max(a)) for a count of bins and no range; "
          "constant otherwise")
def _histogram_bin_edges(a: Any, bins: Any = 10, range: Any = None, weights: Any = None) -> Any:
    value, edges = _edges(a, bins, range, weights)
    return value if edges is None else edges


@register(np.unique, kink="each value's derivative is its first occurrence's (a repeated value is a "
          "kink: perturbing one copy splits it)")
def _unique(ar: Any, return_index: bool = False, return_inverse: bool = False,
            return_counts: bool = False, axis: Any = None, **kwargs: Any) -> Any:
    av = P.value(ar)
    out = np.unique(av, True, return_inverse, return_counts, axis, **kwargs)
    values, first = out[0], out[1]
    if axis is None:
        u = P.gather([ar], lambda ix: ix.reshape(-1)[first])
    else:
        u = P.gather([ar], lambda ix: np.take(ix, first, axis=axis))
    u = P.with_value(u, values)
    extras = [first] if return_index else []
    extras += list(out[2:])
    return (u, *extras) if extras else u


def _scatter_at(ufunc: np.ufunc, sign: float) -> Any:
    def rule(a: Any, indices: Any, b: Any = None) -> None:
        name = f"numpy.{ufunc.__name__}.at"
        if not P.is_active(a):
            raise NotImplementedError(
                f"{name} into a plain array of AD values would drop their derivative; accumulate "
                "into an engine array instead (a = np.zeros_like(x))")
        if b is None:
            raise TypeError(f"{name}: expected a second operand")
        av = P.value(a)
        new = av.copy()
        ufunc.at(new, indices, P.value(b))
        targets = np.arange(av.size, dtype=np.intp).reshape(av.shape)[indices]
        contributions = np.broadcast_to(b, np.shape(targets)) if P.is_active(b) else None
        total = a
        if contributions is not None:
            delta = segment_sum(contributions, np.asarray(targets), av.size, av.dtype)
            total = a + sign * np.reshape(delta, av.shape)
        a[...] = P.with_value(total, new) if P.is_active(total) else new
    return rule


register_ufunc(np.add, method="at", kink="unbuffered: repeated indices add up")(_scatter_at(np.add, 1.0))
register_ufunc(np.subtract, method="at", kink="unbuffered: repeated indices add up")(_scatter_at(np.subtract, -1.0))
