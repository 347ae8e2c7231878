"""Derivative rules shared by both AD engines, written once.

Each function here computes, from primal values only, the local weights or coefficients of a
NumPy function's derivative; :mod:`gradtest.forward` applies them to tangents and
:mod:`gradtest.reverse` records them on the tape, so the two modes cannot drift apart. The edge
rules (documented in docs/forward.rst and docs/reverse.rst):

* max/min and their reductions: tied elements share the derivative evenly (``1/m`` each); a NaN
  element is what NumPy returns, so the NaN elements get the derivative; elements beaten by
  ``initial=`` get none.
* var/std with ``ddof >= n``: NumPy divides by ``max(n - ddof, 0)`` = 0, giving inf or NaN; the
  derivative is NaN.
* the chain rule's ``0 * inf = 0`` lives in the C op table (``gt_chain_f64`` in ops.h).
"""

from __future__ import annotations

import numpy as np


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
