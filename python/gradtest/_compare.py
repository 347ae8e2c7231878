"""Comparing a backend's gradient with the ground truth, and the default tolerance rule.

The rule (also in docs/tolerances.rst): for each differentiated leaf,

* ``rtol = max(1e-6, sqrt(eps))`` where eps is the machine epsilon of the coarser of the leaf's
  dtype and the dtype the backend returned (float64: 1e-6, float32: 3.5e-4, float16: 3.1e-2);
* ``atol = rtol * max|ground truth of the leaf|`` (1 when the leaf's ground truth is all zero), so
  that an element near zero is judged on the scale of its neighbours;
* element i passes when ``|g_i - gt_i| <= atol + rtol * |gt_i| + 3 * err_i``, err_i being the
  finite-difference error estimate of that component.

In directional mode the check on direction v_j is
``|<g, v_j> - d_j| <= rtol * (|d_j| + ||g * v_j||_2) + 3 * err_j`` (plus ``atol * sum|v_j|`` when an
``atol`` is given): the 2-norm term is the size of the rounding a correct backend makes in the sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._finite_diff import GroundTruth
from .report import Outcome, WorstElement

RTOL_FLOOR = 1e-6
FD_ERROR_FACTOR = 3.0


def default_rtol(*dtypes: Any) -> float:
    """The default relative tolerance for a gradient computed in the coarsest of ``dtypes``."""
    eps = max(
        (np.finfo(d).eps for d in dtypes if d is not None and np.issubdtype(d, np.floating)),
        default=np.finfo(np.float64).eps,
    )
    return max(RTOL_FLOOR, math.sqrt(float(eps)))


class GradientShapeError(ValueError):
    """A backend returned a gradient that does not fit the arguments."""


def as_gradient_arrays(
    grads: Sequence[Any], leaves: Sequence[np.ndarray], paths: Sequence[str], who: str
) -> list[np.ndarray]:
    """Validates one gradient per differentiated leaf: present, real numeric, the leaf's shape."""
    if len(grads) != len(leaves):
        raise GradientShapeError(f"{who}: expected {len(leaves)} gradient arrays, got {len(grads)}")
    out = []
    for g, leaf, path in zip(grads, leaves, paths):
        if g is None:
            raise GradientShapeError(f"{who}: the gradient for {path} is None; expected an array of shape {leaf.shape}")
        arr = np.asarray(g)
        if arr.dtype.kind not in "fiu":
            raise GradientShapeError(
                f"{who}: the gradient for {path} has dtype {arr.dtype}; expected real floating values"
            )
        if arr.shape != leaf.shape:
            raise GradientShapeError(
                f"{who}: the gradient for {path} has shape {arr.shape}; expected {leaf.shape} (the argument's shape)"
            )
        out.append(arr)
    return out


def compare_full(
    backend: str,
    grads: Sequence[np.ndarray],
    gt: GroundTruth,
    leaves: Sequence[np.ndarray],
    paths: Sequence[str],
    atol: float | None,
    rtol: float | None,
) -> Outcome:
    """Element-wise comparison of a backend's gradient with a full ground truth."""
    assert gt.gradients is not None and gt.errors is not None
    global_scale = max((float(np.max(np.abs(t))) for t in gt.gradients if t.size), default=0.0)
    worst_key = (-math.inf, -math.inf)
    worst = None
    max_abs = max_rel = 0.0
    failed = False
    used_atol = used_rtol = 0.0
    for g, t, e, leaf, path in zip(grads, gt.gradients, gt.errors, leaves, paths):
        g64 = g.astype(np.float64, copy=False)
        rt = rtol if rtol is not None else default_rtol(leaf.dtype, g.dtype)
        scale = float(np.max(np.abs(t))) if t.size else 0.0
        scale = scale or global_scale or 1.0
        at = atol if atol is not None else rt * scale
        used_atol, used_rtol = max(used_atol, at), max(used_rtol, rt)
        if not t.size:
            continue
        # asarray: arithmetic on 0-d arrays gives NumPy scalars, which take no masked assignment
        diff = np.asarray(np.abs(g64 - t))
        diff[~np.isfinite(g64)] = np.inf
        tol = np.asarray(at + rt * np.abs(t) + FD_ERROR_FACTOR * e)
        bad = diff > tol
        failed |= bool(bad.any())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(tol > 0, diff / tol, np.where(diff > 0, np.inf, 0.0))
            rel = np.where(np.abs(t) > 0, diff / np.abs(t), np.where(diff > 0, np.inf, 0.0))
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float(rel.max()))
        k = int(np.argmax(ratio))
        key = (float(ratio.flat[k]), float(diff.flat[k]))
        if key > worst_key:
            worst_key = key
            index = tuple(int(i) for i in np.unravel_index(k, t.shape)) if t.ndim else ()
            worst = WorstElement(path, index, float(t.flat[k]), float(g64.flat[k]), float(tol.flat[k]))
    status = "fail" if failed else "pass"
    message = ""
    if failed and worst is not None:
        message = (
            f"{worst.name}: expected {worst.expected:.8g}, got {worst.got:.8g} "
            f"(|error| {abs(worst.got - worst.expected):.3g} > tolerance {worst.tolerance:.3g})"
        )
    return Outcome(backend, status, max_abs, max_rel, worst, used_atol, used_rtol, message=message)


def compare_directional(
    backend: str,
    grads: Sequence[np.ndarray],
    gt: GroundTruth,
    leaves: Sequence[np.ndarray],
    atol: float | None,
    rtol: float | None,
) -> Outcome:
    """Compares <g, v_j> with the finite-difference directional derivatives d_j."""
    assert gt.directions is not None and gt.derivatives is not None and gt.derivative_errors is not None
    g = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in grads])
    rt = rtol if rtol is not None else max(default_rtol(leaf.dtype, x.dtype) for leaf, x in zip(leaves, grads))
    terms = gt.directions * g
    got = terms.sum(axis=1)
    expected = gt.derivatives
    tol = rt * (np.abs(expected) + np.sqrt((terms**2).sum(axis=1))) + FD_ERROR_FACTOR * gt.derivative_errors
    if atol is not None:
        tol = tol + atol * np.abs(gt.directions).sum(axis=1)
    diff = np.abs(got - expected)
    diff[~np.isfinite(got)] = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, diff / tol, np.where(diff > 0, np.inf, 0.0))
        rel = np.where(np.abs(expected) > 0, diff / np.abs(expected), np.where(diff > 0, np.inf, 0.0))
    k = int(np.argmax(ratio))
    worst = WorstElement("direction", (k,), float(expected[k]), float(got[k]), float(tol[k]))
    failed = bool((diff > tol).any())
    message = ""
    if failed:
        message = (
            f"directional derivative {k}: expected {expected[k]:.8g}, got {got[k]:.8g} "
            f"(|error| {diff[k]:.3g} > tolerance {tol[k]:.3g})"
        )
    return Outcome(
        backend, "fail" if failed else "pass", float(diff.max()), float(rel.max()), worst,
        float(atol or 0.0), rt, message=message,
    )
