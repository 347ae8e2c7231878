"""``check_approx``: approximate equality of nested trees, as LuxTestUtils' ``check_approx``.

The comparison of each pair of leaves follows Julia's ``isapprox``, which the seed uses: two
arrays (or numbers) ``x`` and ``y`` are approximately equal when

    norm(x - y) <= max(atol, rtol * max(norm(x), norm(y)))

with the Frobenius norm, falling back to the same test element by element when ``norm(x - y)``
is not finite (an infinity in the same place on both sides is then equal). The default ``rtol``
is ``sqrt(eps)`` of the wider floating dtype when ``atol`` is 0, else 0 (Julia's
``rtoldefault``). ``nans=True`` takes a NaN on both sides, in the same place, as equal.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

__all__ = ["check_approx"]


def _number(value: Any, argument: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"{argument}: expected a number >= 0, got {type(value).__name__}")
    value = float(value)
    if not (value >= 0) or not math.isfinite(value):
        raise ValueError(f"{argument}: expected a finite number >= 0, got {value!r}")
    return value


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, numbers.Number):
        return True
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype.kind in "biufc"
    return False


def _default_rtol(x: np.ndarray, y: np.ndarray) -> float:
    kinds = [a.dtype for a in (x, y) if a.dtype.kind in "fc"]
    if not kinds:
        return 0.0
    return math.sqrt(float(np.finfo(np.result_type(*kinds)).eps))


def _isapprox(x: Any, y: Any, atol: float, rtol: float | None, nans: bool) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    r = _default_rtol(x, y) if rtol is None and atol == 0 else (rtol or 0.0)
    # compare in float64 (complex128 for complex), so integers do not overflow in x - y
    wide = np.complex128 if "c" in (x.dtype.kind, y.dtype.kind) else np.float64
    x, y = x.astype(wide), y.astype(wide)
    if nans:
        both = np.isnan(x) & np.isnan(y)
        if both.any():
            x, y = np.where(both, 0, x), np.where(both, 0, y)
    with np.errstate(invalid="ignore", over="ignore"):
        d = float(np.linalg.norm((x - y).ravel()))
        if math.isfinite(d):
            return d <= max(atol, r * max(float(np.linalg.norm(x.ravel())), float(np.linalg.norm(y.ravel()))))
        # an infinity or a NaN: element by element, where equal infinities match
        same = x == y
        close = np.abs(x - y) <= np.maximum(atol, r * np.maximum(np.abs(x), np.abs(y)))
        return bool(np.all(same | (np.isfinite(x) & np.isfinite(y) & close)))


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _compare(a: Any, e: Any, path: str, atol: float, rtol: float | None, nans: bool) -> bool:
    if a is None or e is None:
        other = e if a is None else a
        if other is None:
            return True
        # None is a zero tangent (gradtest's gradient of a leaf that is not differentiated)
        return _is_numeric(other) and not np.any(np.asarray(other))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        if type(a) is not type(e):
            return False
        return all(_compare(getattr(a, f.name), getattr(e, f.name), f"{path}.{f.name}", atol, rtol, nans)
                   for f in dataclasses.fields(a))
    if isinstance(a, dict):
        if not isinstance(e, dict) or set(a) != set(e):
            return False
        return all(_compare(a[k], e[k], f"{path}[{k!r}]", atol, rtol, nans) for k in a)
    if isinstance(a, (list, tuple)):
        if _is_namedtuple(a) or _is_namedtuple(e):
            if type(a) is not type(e):
                return False
        elif not isinstance(e, (list, tuple)) or isinstance(a, list) != isinstance(e, list):
            return False
        if len(a) != len(e):
            return False
        return all(_compare(u, v, f"{path}[{i}]", atol, rtol, nans) for i, (u, v) in enumerate(zip(a, e)))
    for value, side in ((a, "actual"), (e, "expected")):
        if not _is_numeric(value):
            raise TypeError(
                f"{side}{path}: expected numbers, NumPy arrays or dicts, lists, tuples, namedtuples "
                f"and dataclasses of them, got {type(value).__name__}"
            )
    return _isapprox(a, e, atol, rtol, nans)


def check_approx(actual: Any, expected: Any, *, atol: float = 0.0, rtol: float | None = None,
                 nans: bool = False) -> bool:
    """Whether two trees of arrays are approximately equal, as LuxTestUtils' ``check_approx``.

    Parameters
    ----------
    actual, expected : Any
        Numbers, NumPy arrays, ``None``, or dicts, lists, tuples, namedtuples and dataclasses of
        them, nested. The structures must match: the same keys, lengths, namedtuple and dataclass
        types (a list does not match a tuple). ``None`` matches ``None`` and, as a zero tangent,
        an all-zero array.
    atol : float
        Absolute tolerance, on the norm of the difference of each pair of leaves.
    rtol : float, optional
        Relative tolerance; default ``sqrt(eps)`` of the leaves' wider floating dtype when
        ``atol`` is 0, else 0 (Julia's ``isapprox``).
    nans : bool
        True: a NaN on both sides in the same place is equal.

    Returns
    -------
    bool
        True when every pair of leaves satisfies
        ``norm(x - y) <= max(atol, rtol * max(norm(x), norm(y)))`` and the structures match.

    Raises
    ------
    TypeError
        A leaf that is not numeric (e.g. a string), naming its place in the tree; ``atol``,
        ``rtol`` or ``nans`` of the wrong type.
    ValueError
        A negative or non-finite ``atol``/``rtol``.

    Examples
    --------
    >>> import numpy as np, gradtest
    >>> gradtest.check_approx({"w": np.array([1.0, 2.0])}, {"w": np.array([1.0, 2.0 + 1e-12])})
    True
    >>> gradtest.check_approx((np.nan, 1.0), (np.nan, 1.0)), gradtest.check_approx((np.nan,), (np.nan,), nans=True)
    (False, True)
    """
    atol_f = _number(atol, "atol")
    rtol_f = _number(rtol, "rtol", allow_none=True)
    if not isinstance(nans, (bool, np.bool_)):
        raise TypeError(f"nans: expected True or False, got {type(nans).__name__}")
    assert atol_f is not None
    return _compare(actual, expected, "", atol_f, rtol_f, bool(nans))
