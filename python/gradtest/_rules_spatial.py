"""Derivative rules of scipy.spatial.distance (``cdist``, ``pdist``, ``squareform`` and the
two-vector distances), written once for both AD engines.

SciPy computes distances in C after ``np.asarray``, so the engines never see them; like the
other SciPy modules (:mod:`gradtest._rules_special`), the module's attributes are replaced by
dispatchers when the rules are installed. Each rule is a composition of NumPy functions the
registry differentiates (the Euclidean and Minkowski distances are ``np.linalg.norm`` of the
differences, so coincident points get norm's rule at 0: derivative 0), and returns SciPy's own
value in SciPy's dtype. Metrics given as callables, and metrics not listed in ``METRICS``,
raise NotImplementedError naming them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _primitives as P

__all__: list[str] = []

_COINCIDENT = "coincident points: derivative 0 (norm's rule at 0)"
#: metric name -> its kink and edge rule, in words
METRICS = {
    "euclidean": _COINCIDENT, "sqeuclidean": "", "cityblock": "abs at equal coordinates: 0",
    "chebyshev": "max's rule at ties, abs's at 0", "minkowski": _COINCIDENT + "; p from the keyword",
    "cosine": "undefined at a zero vector (NaN)", "correlation": "undefined at a constant vector (NaN)",
}
KINKS = {
    "scipy.spatial.distance.cdist": "metrics " + ", ".join(METRICS) + "; " + _COINCIDENT,
    "scipy.spatial.distance.pdist": "as cdist",
    "scipy.spatial.distance.squareform": "a selection: exact",
    **{f"scipy.spatial.distance.{m}": k for m, k in METRICS.items()},
}


def _array(x: Any) -> Any:
    return x if P.is_active(x) else np.asarray(x, dtype=np.float64)


def _pair_distance(metric: str, u: Any, v: Any, p: float = 2.0) -> Any:
    """The distance of each pair of rows u[..., :] and v[..., :] (broadcast)."""
    if metric == "euclidean":
        return np.linalg.norm(u - v, axis=-1)
    if metric == "minkowski":
        return np.linalg.norm(u - v, ord=p, axis=-1)
    if metric == "sqeuclidean":
        return np.sum((u - v) ** 2, axis=-1)
    if metric == "cityblock":
        return np.sum(np.abs(u - v), axis=-1)
    if metric == "chebyshev":
        return np.max(np.abs(u - v), axis=-1)
    if metric == "correlation":
        u = u - np.mean(u, axis=-1, keepdims=True)
        v = v - np.mean(v, axis=-1, keepdims=True)
    # cosine (and correlation on centred rows)
    return 1.0 - np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))


def _metric(name: str, metric: Any, kwargs: dict[str, Any]) -> tuple[str, float]:
    if not isinstance(metric, str) or metric not in METRICS:
        raise NotImplementedError(
            f"scipy.spatial.distance.{name}(..., metric={metric!r}) is not supported by gradtest's AD "
            f"engines (supported: {', '.join(METRICS)})")
    extra = set(kwargs) - ({"p"} if metric == "minkowski" else set())
    if extra:
        raise NotImplementedError(f"scipy.spatial.distance.{name}(..., {', '.join(sorted(extra))}=...) "
                                  "is not supported by gradtest's AD engines")
    return metric, float(kwargs.get("p", 2.0))


def rules(sd: Any) -> dict[str, Callable[..., Any]]:
    """The rules, given the module (whose original functions compute the values)."""
    originals = {name: getattr(getattr(sd, name), "__gradtest_original__", getattr(sd, name))
                 for name in ("cdist", "pdist", "squareform", *METRICS)}

    def cdist(XA: Any, XB: Any, metric: Any = "euclidean", *, out: Any = None, **kwargs: Any) -> Any:
        if out is not None:
            raise NotImplementedError("scipy.spatial.distance.cdist(..., out=...) is not supported by "
                                      "gradtest's AD engines")
        name, p = _metric("cdist", metric, kwargs)
        value = originals["cdist"](P.value(XA), P.value(XB), metric, **kwargs)  # SciPy's checks too
        a, b = _array(XA), _array(XB)
        return P.with_library_value(_pair_distance(name, a[:, None, :], b[None, :, :], p), value)

    def pdist(X: Any, metric: Any = "euclidean", *, out: Any = None, **kwargs: Any) -> Any:
        if out is not None:
            raise NotImplementedError("scipy.spatial.distance.pdist(..., out=...) is not supported by "
                                      "gradtest's AD engines")
        name, p = _metric("pdist", metric, kwargs)
        value = originals["pdist"](P.value(X), metric, **kwargs)
        x = _array(X)
        i, j = np.triu_indices(np.shape(x)[0], 1)
        return P.with_library_value(_pair_distance(name, x[i], x[j], p), value)

    def squareform(X: Any, force: str = "no", checks: bool = True) -> Any:
        value = originals["squareform"](P.value(X), force, checks)
        x = _array(X)
        if np.ndim(value) == 2:  # condensed -> square: each entry twice, zeros on the diagonal
            positions = originals["squareform"](np.arange(1, np.size(x) + 1, dtype=np.intp), checks=False) - 1
            return P.with_library_value(P.gather([x], lambda ix: np.where(positions >= 0, ix[np.maximum(positions, 0)]
                                                           if ix.size else P.FILL, P.FILL)), value)
        i, j = np.triu_indices(np.shape(x)[0], 1)
        return P.with_library_value(x[i, j], value)

    def pairwise(name: str) -> Callable[..., Any]:
        def distance(u: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
            if name == "minkowski" and args:
                kwargs["p"], args = args[0], args[1:]
            if args:
                raise NotImplementedError(f"scipy.spatial.distance.{name} with weights is not "
                                          "supported by gradtest's AD engines")
            _, p = _metric(name, name, kwargs)
            value = originals[name](P.value(u), P.value(v), **kwargs)
            return P.with_library_value(_pair_distance(name, _array(u), _array(v), p), value)
        return distance

    return {"cdist": cdist, "pdist": pdist, "squareform": squareform,
            **{name: pairwise(name) for name in METRICS}}
