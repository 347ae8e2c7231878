"""Comparing a backend's gradient with the ground truth: per-element tolerances, kinks, and the
localisation of wrong elements from directional derivatives.

The model (docs/tolerances.rst has the reasoning): element i of a backend's gradient g passes when

    |g_i - t_i| <= 3 e_i + rho |t_i| + alpha m

with t_i the ground truth, e_i its error bound (computed by the finite-difference engine for
that very element), m the largest |t| over the element's argument, and rho, alpha the backend's
rounding allowances: rho = eps_b^(3/4) and alpha = 16 eps_b when the backend computes in the
ground truth's precision (its rounding of f is already inside e_i), rho = alpha = sqrt(eps_b)
when it computes in a coarser one (it evaluates a rounded f); eps_b is the machine epsilon of the
coarser of the argument's dtype and the gradient's. ``rtol=`` replaces rho, ``atol=`` the whole
third term.

In directional mode, direction v_j passes when

    |<g, v_j> - d_j| <= 3 e_j + rho ||g * v_j||_2 + eps64 sum_i |g_i v_ji|

and when some fail, the residuals are correlated with each element's components to find the few
elements that explain them; those are confirmed with full finite differences of their own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core
from ._finite_diff import GroundTruth, GroundTruthError
from ._problem import DirectionalDerivatives
from .report import Outcome, WorstElement

#: the factor on the finite-difference error bound (tests/test_verdicts.py calibrates the bound
#: against mpmath: the actual error stays below it but where truncation and rounding are of one
#: size, up to 1.32x there in 20,000 samples of sin(50 x); 3 leaves room for functions outside it)
FD_ERROR_FACTOR = 3.0
#: elements a failing backend gets one-sided derivatives for (kink analysis)
KINK_LIMIT = 64
#: wrong elements a directional failure can be traced to (each confirmed by finite differences)
MAX_SUSPECTS = 4
#: candidates (most correlated with the residuals) the search for them starts from, and the
#: number of best-fitting single elements it tries as the first
POOL = 48
SEEDS = 4
EPS64 = float(np.finfo(np.float64).eps)


#: the absolute allowance at the argument's scale, in units of the backend's epsilon, when it
#: computes in the ground truth's precision (a correct gradient's rounding from sums of terms
#: the size of the largest element)
LEAF_ROUNDING = 16.0


def rounding_allowance(leaf_dtype: Any, grad_dtype: Any, truth_dtype: Any = np.float64) -> float:
    """rho: the relative rounding allowed to a backend that computed in the coarser of
    ``leaf_dtype`` and ``grad_dtype``, against a ground truth computed in ``truth_dtype``."""
    eps_b = max(_eps(leaf_dtype), _eps(grad_dtype))
    if eps_b > _eps(truth_dtype):
        return math.sqrt(eps_b)
    return eps_b ** 0.75


def scale_allowance(leaf_dtype: Any, grad_dtype: Any, truth_dtype: Any = np.float64) -> float:
    """The absolute allowance, per unit of the argument's largest |ground truth|: sqrt(eps_b)
    for a backend coarser than the ground truth, LEAF_ROUNDING * eps_b otherwise."""
    eps_b = max(_eps(leaf_dtype), _eps(grad_dtype))
    if eps_b > _eps(truth_dtype):
        return math.sqrt(eps_b)
    return LEAF_ROUNDING * eps_b


def _eps(dtype: Any) -> float:
    if dtype is None or not np.issubdtype(dtype, np.floating):
        return EPS64
    return float(np.finfo(dtype).eps)


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


@dataclasses.dataclass
class _Flat:
    """The backend's gradient and the ground truth as flat float64 vectors, with per-element
    tolerance terms."""

    g: np.ndarray
    t: np.ndarray
    fd_term: np.ndarray
    rel_term: np.ndarray
    abs_term: np.ndarray
    rtol: float
    atol: float
    offsets: np.ndarray

    @property
    def tol(self) -> np.ndarray:
        return self.fd_term + self.rel_term + self.abs_term


def _flatten(grads, gt: GroundTruth, leaves, atol, rtol) -> _Flat:
    assert gt.gradients is not None and gt.errors is not None
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("g", "t", "fd", "rel", "abs")}
    used_rtol = used_atol = 0.0
    for g, t, e, leaf in zip(grads, gt.gradients, gt.errors, leaves):
        g64 = np.asarray(g, dtype=np.float64).ravel()
        t64 = np.asarray(t, dtype=np.float64).ravel()
        rho = rounding_allowance(leaf.dtype, g.dtype, gt.dtype)
        rt = rtol if rtol is not None else rho
        m = float(np.max(np.abs(t64))) if t64.size else 0.0
        at = atol if atol is not None else scale_allowance(leaf.dtype, g.dtype, gt.dtype) * m
        used_rtol, used_atol = max(used_rtol, rt), max(used_atol, at)
        parts["g"].append(g64)
        parts["t"].append(t64)
        parts["fd"].append(FD_ERROR_FACTOR * np.asarray(e, dtype=np.float64).ravel())
        parts["rel"].append(rt * np.abs(t64))
        parts["abs"].append(np.full(t64.size, at))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    offsets = np.concatenate([[0], np.cumsum([np.size(t) for t in gt.gradients])]).astype(int)
    return _Flat(cat["g"], cat["t"], cat["fd"], cat["rel"], cat["abs"], used_rtol, used_atol, offsets)


def _dominant(flat: _Flat, i: int, atol_given: bool, rtol_given: bool) -> str:
    terms = {
        "the finite-difference error bound": flat.fd_term[i],
        ("rtol" if rtol_given else "the backend's rounding allowance") + " times |expected|": flat.rel_term[i],
        ("atol" if atol_given else "the rounding allowance at the argument's scale"): flat.abs_term[i],
    }
    return max(terms, key=terms.get)  # type: ignore[arg-type]


def _element(gt: GroundTruth, paths, leaves, flat_index: int) -> tuple[str, tuple[int, ...]]:
    assert gt.gradients is not None
    offsets = np.concatenate([[0], np.cumsum([t.size for t in gt.gradients])]).astype(int)
    leaf = int(np.searchsorted(offsets, flat_index, side="right") - 1)
    local = flat_index - int(offsets[leaf])
    shape = gt.gradients[leaf].shape
    index = tuple(int(i) for i in np.unravel_index(local, shape)) if shape else ()
    return paths[leaf], index


def compare_full(
    backend: str,
    grads: Sequence[np.ndarray],
    gt: GroundTruth,
    leaves: Sequence[np.ndarray],
    paths: Sequence[str],
    atol: float | None,
    rtol: float | None,
    kinks: str = "report",
    nans: bool = False,
) -> Outcome:
    """Element-wise comparison of a backend's gradient with a full ground truth (see the module
    docstring), with kinks judged by their one-sided derivatives; with ``nans``, NaN in the same
    element of both is a match."""
    flat = _flatten(grads, gt, leaves, atol, rtol)
    n = flat.t.size
    diff = np.abs(flat.g - flat.t)
    diff[~np.isfinite(flat.g) | ~np.isfinite(flat.t)] = np.inf
    if nans:
        diff[np.isnan(flat.g) & np.isnan(flat.t)] = 0.0
    tol = np.nan_to_num(flat.tol, nan=0.0)  # a NaN truth matches nothing but a NaN (with nans)
    bad = diff > tol
    notes: list[str] = []
    forgiven = np.zeros(n, dtype=bool)
    if bad.any() and gt.probe is not None:
        forgiven, notes = _judge_kinks(backend, flat, np.flatnonzero(bad), gt, kinks)
    failing = bad & ~forgiven
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, diff / tol, np.where(diff > 0, np.inf, 0.0))
        rel = np.where(np.abs(flat.t) > 0, diff / np.abs(flat.t), np.where(diff > 0, np.inf, 0.0))
    # the worst element: the worst failing one, else the one closest to its tolerance
    pool = np.flatnonzero(failing) if failing.any() else np.arange(n)
    k = int(pool[np.argmax(ratio[pool])]) if n else 0
    worst = None
    if n:
        path, index = _element(gt, paths, leaves, k)
        worst = WorstElement(path, index, float(flat.t[k]), float(flat.g[k]), float(tol[k]),
                             _dominant(flat, k, atol is not None, rtol is not None))
    n_failed = int(failing.sum())
    message = ""
    if n_failed and worst is not None:
        message = (
            f"{worst.name}: expected {worst.expected:.8g}, got {worst.got:.8g} "
            f"(|error| {abs(worst.got - worst.expected):.3g} > tolerance {worst.tolerance:.3g}, "
            f"mostly {worst.dominant}); {n_failed} of {n} elements out of tolerance"
        )
    return Outcome(backend, "fail" if n_failed else "pass", float(diff.max()) if n else 0.0,
                   float(rel.max()) if n else 0.0, worst, flat.atol, flat.rtol, message=message,
                   n_failed=n_failed, n_compared=n, notes=notes)


def _judge_kinks(backend: str, flat: _Flat, suspects: np.ndarray, gt: GroundTruth,
                 kinks: str) -> tuple[np.ndarray, list[str]]:
    """One-sided derivatives at the elements a backend fails: where they differ beyond their
    bounds f has a kink there, and a value between them (or at either) is accepted (``kinks=
    'report'``); where they agree but the central difference does not, its steps straddled a
    jump, and the one-sided values are the reference. Returns (forgiven mask, notes)."""
    forgiven = np.zeros(flat.t.size, dtype=bool)
    notes: list[str] = []
    if suspects.size > KINK_LIMIT:
        return forgiven, notes
    assert gt.probe is not None
    try:
        left, e_left = gt.probe.derivatives(suspects, "backward")
        right, e_right = gt.probe.derivatives(suspects, "forward")
    except GroundTruthError as exc:
        return forgiven, [f"kink analysis failed: {exc}"]
    for i, lv, el, rv, er in zip(suspects, left, e_left, right, e_right):
        if not (np.isfinite(lv) and np.isfinite(rv)):
            continue
        slack = FD_ERROR_FACTOR * max(el, er) + flat.rel_term[i] + flat.abs_term[i] \
            + (flat.rtol * max(abs(lv), abs(rv)))
        g = flat.g[i]
        kink = abs(lv - rv) > FD_ERROR_FACTOR * (el + er) + slack
        straddled = not kink and abs(flat.t[i] - lv) > FD_ERROR_FACTOR * (el + flat.fd_term[i] / FD_ERROR_FACTOR) \
            and abs(flat.t[i] - rv) > FD_ERROR_FACTOR * (er + flat.fd_term[i] / FD_ERROR_FACTOR)
        if kink:
            name = gt.probe.name(int(i))
            notes.append(f"kink at {name}: left {lv:.8g}, right {rv:.8g}; {backend} gave {g:.8g}")
            if kinks == "report" and min(lv, rv) - slack <= g <= max(lv, rv) + slack:
                forgiven[i] = True
        elif straddled:
            name = gt.probe.name(int(i))
            notes.append(f"the central difference at {name} straddled a discontinuity; one-sided "
                         f"derivatives {lv:.8g} and {rv:.8g} were used")
            if abs(g - lv) <= slack or abs(g - rv) <= slack:
                forgiven[i] = True
    return forgiven, notes


def compare_directional(
    backend: str,
    grads: Sequence[np.ndarray],
    gt: GroundTruth,
    leaves: Sequence[np.ndarray],
    atol: float | None,
    rtol: float | None,
    paths: Sequence[str] | None = None,
    nans: bool = False,
) -> Outcome:
    """Compares <g, v_j> with the finite-difference directional derivatives d_j; when directions
    fail, names the elements that explain them (confirmed by their own finite differences).
    ``nans`` changes nothing here: the finite-difference derivatives are never NaN."""
    assert gt.derivatives is not None and gt.derivative_errors is not None and gt.scale is not None
    k = gt.n_directions
    if isinstance(grads, DirectionalDerivatives):
        # the backend differentiated along the directions itself: no gradient, so the rounding
        # terms take the root mean square of its derivatives for ||g * v_j||_2 (its expectation
        # over these random-sign directions) and, by Cauchy-Schwarz, sqrt(n) times that for
        # sum_i |g_i v_ji|; the suspects' elements come from the backend one at a time
        got = np.asarray(grads.values, dtype=np.float64)
        norms = np.full(k, math.sqrt(float(np.mean(got * got))) if k else 0.0)
        abssum = math.sqrt(gt.scale.size) * norms
        rho = max(rounding_allowance(leaf.dtype, dt, gt.dtype) for leaf, dt in zip(leaves, grads.dtypes))
        g: Any = _Elements(grads.element)
    else:
        parts = [np.asarray(x, dtype=np.float64).ravel() for x in grads]
        g = parts[0] if len(parts) == 1 else np.concatenate(parts)  # no copy of a lone argument
        rho = max(rounding_allowance(leaf.dtype, x.dtype, gt.dtype) for leaf, x in zip(leaves, grads))
        got, norms, abssum = _core.direction_products(gt.seed, k, gt.scale, g)
    rt = rtol if rtol is not None else rho
    expected = gt.derivatives
    tol = FD_ERROR_FACTOR * gt.derivative_errors + rt * norms + EPS64 * abssum
    if atol is not None:
        tol = tol + atol * float(np.sum(gt.scale))  # sum_i |v_ji|: the scales, whatever the signs
    diff = np.abs(got - expected)
    diff[~np.isfinite(got)] = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, diff / tol, np.where(diff > 0, np.inf, 0.0))
        rel = np.where(np.abs(expected) > 0, diff / np.abs(expected), np.where(diff > 0, np.inf, 0.0))
    j = int(np.argmax(ratio))
    worst = WorstElement("direction", (j,), float(expected[j]), float(got[j]), float(tol[j]),
                         "the finite-difference error bound" if FD_ERROR_FACTOR * gt.derivative_errors[j]
                         >= rt * norms[j] else "the backend's rounding allowance")
    failed = diff > tol
    n_failed = int(failed.sum())
    message = ""
    notes: list[str] = []
    if n_failed:
        message = (
            f"{n_failed} of {k} directional derivatives out of tolerance; worst {j}: expected "
            f"{expected[j]:.8g}, got {got[j]:.8g} (|error| {diff[j]:.3g} > tolerance {tol[j]:.3g})"
        )
        if paths is not None and gt.probe is not None and np.all(np.isfinite(got)):
            located = _localise(g, got - expected, tol, gt, leaves, paths, rt, atol)
            if located is not None:
                worst, located_message = located
                message = located_message + "; " + message
            else:
                notes.append("the residuals are not explained by a few wrong elements: the error is "
                             "spread over the gradient (rerun with mode='full' on a smaller input to see it)")
    return Outcome(
        backend, "fail" if n_failed else "pass", float(diff.max()), float(rel.max()), worst,
        float(atol or 0.0), rt, message=message, n_failed=n_failed, n_compared=k, notes=notes,
    )


class _Elements:
    """g[i] for a backend that gives single gradient elements on request (cached)."""

    def __init__(self, element: Any) -> None:
        self._element, self._cache = element, {}

    def __getitem__(self, i: int) -> float:
        if i not in self._cache:
            self._cache[i] = float(self._element([int(i)])[0])
        return self._cache[i]


def _localise(g, residual, tol, gt: GroundTruth, leaves, paths, rt, atol):
    """Finds a few elements that explain the residuals r_j = <g - t, v_j>: element i alone
    would give r = delta_i v_.i, so a set S explains r when the least-squares fit of r by the
    columns v_.S leaves every direction within its tolerance. Orthogonal matching pursuit,
    started from each of the SEEDS single elements that fit r best (the one most correlated
    with r can be an impostor when two elements are wrong). Each suspect's own derivative is
    then computed by finite differences. Returns (worst element, message) when confirmed
    suspects explain the failure, else None."""
    assert gt.probe is not None and gt.scale is not None
    r = residual.astype(np.float64)

    def column(i: int) -> np.ndarray:
        return _core.direction_components(gt.seed, gt.n_directions, i) * gt.scale[i]

    def fit(subset: list[int]) -> tuple[float, np.ndarray]:
        basis = np.array([column(i) for i in subset]).T
        coef, *_ = np.linalg.lstsq(basis, r, rcond=None)
        left = r - basis @ coef
        return float(np.max(np.abs(left) / tol)), left

    def most_correlated(left: np.ndarray, count: int, exclude: list[int]) -> list[int]:
        c, sq = _core.direction_combine(gt.seed, gt.scale, left)  # sum_j r_j v_ji, sum_j v_ji^2
        score = np.abs(c) / np.sqrt(sq)
        score[exclude] = 0
        return [int(i) for i in np.argsort(score)[-count:][::-1]]

    pool = most_correlated(r, POOL, [])
    singles = sorted(pool, key=lambda i: float(np.sum(fit([i])[1] ** 2)))
    suspects: list[int] = []
    for seed in singles[:SEEDS]:
        chosen = [seed]
        misfit, left = fit(chosen)
        while misfit > 1 and len(chosen) < MAX_SUSPECTS:
            chosen.append(most_correlated(left, 1, chosen)[0])
            misfit, left = fit(chosen)
        if misfit <= 1:
            suspects = chosen
            break
    if not suspects:
        return None
    try:
        t, e = gt.probe.derivatives(suspects, "central")
    except GroundTruthError:
        return None
    confirmed = []
    offsets = _offsets(leaves)
    for i, ti, ei in zip(suspects, t, e):
        leaf = int(np.searchsorted(offsets, i, side="right") - 1)
        # the element's full-mode tolerance, less the term at its argument's scale, which is
        # unknown without the whole ground truth
        limit = FD_ERROR_FACTOR * ei + rt * abs(ti) + (atol or 0.0)
        if abs(g[i] - ti) > limit:
            confirmed.append((i, ti, limit))
    if not confirmed:
        return None
    i, ti, limit = max(confirmed, key=lambda c: abs(g[c[0]] - c[1]) / c[2])
    leaf = int(np.searchsorted(offsets, i, side="right") - 1)
    local = i - int(offsets[leaf])
    shape = leaves[leaf].shape
    index = tuple(int(x) for x in np.unravel_index(local, shape)) if shape else ()
    worst = WorstElement(paths[leaf], index, float(ti), float(g[i]), float(limit),
                         "the finite-difference error bound")
    names = ", ".join(gt.probe.name(c[0]) for c in confirmed)
    message = (f"{worst.name}: expected {ti:.8g}, got {g[i]:.8g} (|error| {abs(g[i] - ti):.3g} > tolerance "
               f"{limit:.3g}), located from the failing directions and confirmed by its own finite "
               f"differences (wrong: {names})")
    return worst, message


def _offsets(leaves) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([leaf.size for leaf in leaves])]).astype(int)

