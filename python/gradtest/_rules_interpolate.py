"""Derivative rules of scipy.interpolate's splines, written once for both AD engines.

Two ways a spline meets an AD value:

* **Evaluated at AD points** (``CubicSpline(t, y)(q)``, ``make_interp_spline(t, y)(q)``, a
  ``PchipInterpolator`` or ``Akima1DInterpolator`` built from plain data): the piecewise
  polynomials' ``__call__`` (``PPoly``/``BPoly``'s base class and ``BSpline``) is replaced by a
  dispatcher whose rule is the spline's own derivative, ``s(q, nu) ' = s(q, nu + 1)``, computed
  by SciPy (and, for order 2, that rule again). At a breakpoint the derivative is that of the
  piece SciPy evaluates there. The value is SciPy's.
* **Built from AD data** (``CubicSpline(t, y)``, ``make_interp_spline(t, y)``, ``interp1d(t, y)``
  with ``y`` an engine array): these are linear in ``y``. The spline of the identity (the same
  constructor on ``np.eye(n)``, with every boundary value set to 0: the affine part has
  derivative 0) gives the basis ``B(q)`` with ``s(q) = B(q) @ y``; the object returned holds it and
  SciPy's spline of the primal values, and evaluates (``__call__``, ``derivative``,
  ``antiderivative``, ``integrate``) as ``tensordot(B(q), y)`` with SciPy's value.
* **Integrated between AD bounds** (``spline.integrate(a, b)``): ``s(b) db - s(a) da``. Differentiated
  points and data together work (``B(q)`` is then an engine array by the rule above). Other
  attributes raise NotImplementedError naming them, as do a differentiated ``x`` (the knots),
  ``axis`` other than 0, and CubicSpline's ``bc_type='periodic'``.

PchipInterpolator and Akima1DInterpolator are not linear in ``y`` (their slopes are limited), so
they are not given the second treatment: built from AD data they meet the engines' conversion
error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _primitives as P

__all__: list[str] = []

KINKS = {
    "scipy.interpolate.CubicSpline": "in y (linear: the spline of the identity) and in the evaluation points "
                                     "(the spline's derivative; at a breakpoint, the piece SciPy evaluates)",
    "scipy.interpolate.make_interp_spline": "as CubicSpline",
    "scipy.interpolate.interp1d": "in y only (linear: the interpolant of the identity); points: NotImplementedError",
    "scipy.interpolate.PPoly.__call__": "the derivative of the piece SciPy evaluates (PchipInterpolator, "
                                        "Akima1DInterpolator, CubicSpline and BPoly too)",
    "scipy.interpolate.BSpline.__call__": "the derivative of the piece SciPy evaluates",
    "scipy.interpolate.PPoly.integrate": "in the bounds: s(b) db - s(a) da (scalar bounds)",
    "scipy.interpolate.BSpline.integrate": "in the bounds: s(b) db - s(a) da (scalar bounds)",
}


def _refuse(what: str) -> NotImplementedError:
    return NotImplementedError(f"{what} is not supported by gradtest's AD engines")


def _defining(cls: type, name: str) -> type:
    return next(c for c in cls.__mro__ if name in c.__dict__)


def _integral_rule(label: str, integrate: Callable[..., Any]) -> Callable[..., Any]:
    """The rule of ``spline.integrate(a, b)`` in its bounds: s(b) db - s(a) da."""

    def rule(self: Any, a: Any, b: Any, extrapolate: Any = None) -> Any:
        value = np.asarray(integrate(self, P.value(a), P.value(b), extrapolate))
        if P.engine_of(a, b) is None:
            return value
        if np.ndim(P.value(a)) or np.ndim(P.value(b)):
            raise _refuse(f"{label} with bounds that are not scalars")

        def partials_of(lo: Any, hi: Any) -> list[Any]:
            return [-self(lo, 0, extrapolate), self(hi, 0, extrapolate)]
        partials = [None if not P.is_active(x) else np.asarray(p, dtype=value.dtype)
                    for x, p in zip((a, b), partials_of(P.value(a), P.value(b)))]
        return P.pointwise(value, [a, b], partials, label, False, partials_of=partials_of)
    return rule


def _evaluation_rule(label: str, call: Callable[..., Any]) -> Callable[..., Any]:
    """The rule of ``spline(x, nu, extrapolate)`` at AD points x: the derivative is nu + 1."""

    def rule(self: Any, x: Any, nu: int = 0, extrapolate: Any = None) -> Any:
        xv = np.asarray(P.value(x))
        value = np.asarray(call(self, xv, nu, extrapolate))
        if not P.is_active(x):
            return value
        if getattr(self, "axis", 0) != 0:
            raise _refuse(f"{label} of a spline with axis != 0 at gradtest's arrays")
        tail = value.ndim - xv.ndim
        xin = np.reshape(x, xv.shape + (1,) * tail)
        slope = np.asarray(call(self, xv, nu + 1, extrapolate)).astype(value.dtype, copy=False)

        def partials_of(xi: Any) -> list[Any]:
            return [self(np.reshape(xi, xv.shape), nu + 1, extrapolate)]
        return P.pointwise(value, [xin], [slope], label, False, partials_of=partials_of)
    return rule


class LinearInData:
    """A spline built from AD data ``y``: ``s(q) = B(q) @ y`` with ``B`` the spline of the identity.

    Parameters
    ----------
    label : str
        The constructor's public name, for messages.
    primal : callable
        SciPy's spline of the primal values (its values are returned).
    basis : callable
        The same spline of ``np.eye(n)`` (its affine part removed).
    y : engine array
        The data, interpolated along its first axis.
    """

    def __init__(self, label: str, primal: Any, basis: Any, y: Any) -> None:
        self._label, self._primal, self._basis, self._y = label, primal, basis, y

    def _combine(self, weights: Any, value: Any) -> Any:
        return P.with_library_value(np.tensordot(weights, self._y, axes=([-1], [0])), value)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        value = self._primal(P.value(x), *args, **kwargs)
        return self._combine(self._basis(x, *args, **kwargs), value)

    def derivative(self, nu: int = 1) -> LinearInData:
        """The derivative spline, still linear in ``y``."""
        return LinearInData(self._label, self._primal.derivative(nu), self._basis.derivative(nu), self._y)

    def antiderivative(self, nu: int = 1) -> LinearInData:
        """The antiderivative spline, still linear in ``y``."""
        return LinearInData(self._label, self._primal.antiderivative(nu), self._basis.antiderivative(nu), self._y)

    def integrate(self, a: Any, b: Any, extrapolate: Any = None) -> Any:
        """The definite integral from ``a`` to ``b`` (the bounds may be differentiated too)."""
        value = self._primal.integrate(P.value(a), P.value(b), extrapolate)
        return P.with_library_value(np.tensordot(self._basis.integrate(a, b, extrapolate), self._y, axes=([0], [0])), value)

    def __getattr__(self, name: str) -> Any:
        raise _refuse(f"{self._label}(...).{name} of a spline built from gradtest's arrays")


def _check_data(label: str, x: Any, y: Any, axis: int) -> int:
    if P.is_active(x):
        raise NotImplementedError(f"{label}: no derivative in x (the knots are held to be constants; pass a "
                                  "plain array for them)")
    if axis not in (0, -np.ndim(P.value(y))):
        raise _refuse(f"{label}(..., axis={axis}) with differentiated y")
    return int(np.shape(P.value(y))[0])


def _zero_bc(bc: Any, n: int) -> Any:
    """A boundary condition with its values set to 0, for the spline of the n x n identity
    (strings and None kept)."""
    if bc is None or isinstance(bc, str):
        return bc
    if isinstance(bc, tuple) and len(bc) == 2 and isinstance(bc[0], (int, np.integer)):
        return (bc[0], np.zeros(n))
    return type(bc)(_zero_bc(b, n) for b in bc) if isinstance(bc, (list, tuple)) else bc


def _new(cls: type, original_new: Any, build: Callable[..., Any]) -> Callable[..., Any]:
    """``cls.__new__``: SciPy's object for plain data (and for subclasses, unpickling, copies),
    ``build(...)`` when the data are engine arrays."""
    def new(klass: type, *args: Any, **kwargs: Any) -> Any:
        if klass is not cls or P.engine_of(*args, *kwargs.values()) is None:
            return original_new(klass)
        return build(*args, **kwargs)
    new.__gradtest_original__ = original_new  # type: ignore[attr-defined]
    return new


def _cubic_spline_new(cls: type, original_new: Any, label: str) -> Callable[..., Any]:
    def build(x: Any, y: Any, axis: int = 0, bc_type: Any = "not-a-knot", extrapolate: Any = None) -> Any:
        n = _check_data(label, x, y, axis)
        if bc_type == "periodic":
            raise _refuse(f"{label}(..., bc_type='periodic') with differentiated y")
        primal = cls(P.value(x), P.value(y), axis=axis, bc_type=bc_type, extrapolate=extrapolate)
        basis = cls(P.value(x), np.eye(n), axis=0, bc_type=_zero_bc(bc_type, n), extrapolate=extrapolate)
        return LinearInData(label, primal, basis, y)
    return _new(cls, original_new, build)


def _interp1d_new(cls: type, original_new: Any, label: str) -> Callable[..., Any]:
    def build(x: Any, y: Any, kind: Any = "linear", axis: int = -1, copy: bool = True,
              bounds_error: Any = None, fill_value: Any = np.nan, assume_sorted: bool = False) -> Any:
        if P.is_active(fill_value):
            raise NotImplementedError(f"{label}: no derivative in fill_value")
        n = _check_data(label, x, y, axis)
        primal = cls(P.value(x), P.value(y), kind, axis, copy, bounds_error, fill_value, assume_sorted)
        # out of range the interpolant is the fill (a constant: derivative 0) or the extrapolation
        basis_fill = fill_value if isinstance(fill_value, str) else 0.0
        basis = cls(P.value(x), np.eye(n), kind, 0, True, bounds_error, basis_fill, assume_sorted)
        return LinearInData(label, primal, basis, y)
    return _new(cls, original_new, build)


def install(si: Any, original: Callable[[Any], Any]) -> dict[str, Callable[..., Any]]:
    """Installs the evaluation rules and the constructors' rules on scipy.interpolate's classes;
    returns the module functions' rules (make_interp_spline) for the caller to install."""
    for cls, label in ((si.PPoly, "scipy.interpolate.PPoly.__call__"), (si.BSpline, "scipy.interpolate.BSpline.__call__")):
        owner = _defining(cls, "__call__")
        call = original(owner.__dict__["__call__"])
        owner.__call__ = _method_dispatcher(call, _evaluation_rule(label, call))
        owner = _defining(cls, "integrate")
        integrate = original(owner.__dict__["integrate"])
        owner.integrate = _bounds_dispatcher(integrate, _integral_rule(label.replace("__call__", "integrate"),
                                                                      integrate))
    for cls, make in ((si.CubicSpline, _cubic_spline_new), (si.interp1d, _interp1d_new)):
        label = f"scipy.interpolate.{cls.__name__}"
        original_new = original(cls.__dict__.get("__new__", object.__new__))
        if isinstance(original_new, staticmethod):
            original_new = original_new.__func__
        cls.__new__ = staticmethod(make(cls, original_new, label))
    si.interp1d.__call__ = _refusing_call(original(_defining(si.interp1d, "__call__").__dict__["__call__"]))
    make_interp_spline_0 = original(si.make_interp_spline)

    def make_interp_spline(x: Any, y: Any, k: int = 3, t: Any = None, bc_type: Any = None, axis: int = 0,
                           check_finite: bool = True) -> Any:
        label = "scipy.interpolate.make_interp_spline"
        n = _check_data(label, x, y, axis)
        if P.is_active(t):
            raise NotImplementedError(f"{label}: no derivative in t (the knots)")
        primal = make_interp_spline_0(P.value(x), P.value(y), k, t, bc_type, axis, check_finite)
        basis = make_interp_spline_0(P.value(x), np.eye(n), k, t, _zero_bc(bc_type, n), 0, check_finite)
        return LinearInData(label, primal, basis, y)

    return {"make_interp_spline": make_interp_spline}


def _refusing_call(call: Callable[..., Any]) -> Callable[..., Any]:
    """interp1d's ``__call__``: at AD points a NotImplementedError that names the alternatives
    (its kinds are built on private state; make_interp_spline gives the same splines)."""
    def dispatch(self: Any, x: Any) -> Any:
        if P.is_active(x):
            raise NotImplementedError(
                "scipy.interpolate.interp1d(...) evaluated at gradtest's arrays is not supported (its data y "
                "may be differentiated); use np.interp(x, xp, fp) or make_interp_spline(xp, fp, k)(x)")
        return call(self, x)
    dispatch.__gradtest_original__ = call  # type: ignore[attr-defined]
    dispatch.__doc__ = call.__doc__
    dispatch.__name__ = "__call__"
    return dispatch


def _bounds_dispatcher(integrate: Callable[..., Any], rule: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch(self: Any, a: Any, b: Any, extrapolate: Any = None) -> Any:
        if P.engine_of(a, b) is not None:
            return rule(self, a, b, extrapolate)
        return integrate(self, a, b, extrapolate)
    dispatch.__gradtest_original__ = integrate  # type: ignore[attr-defined]
    dispatch.__doc__ = integrate.__doc__
    dispatch.__name__ = "integrate"
    return dispatch


def _method_dispatcher(call: Callable[..., Any], rule: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch(self: Any, x: Any, nu: int = 0, extrapolate: Any = None) -> Any:
        if P.is_active(x):
            return rule(self, x, nu, extrapolate)
        return call(self, x, nu, extrapolate)
    dispatch.__gradtest_original__ = call  # type: ignore[attr-defined]
    dispatch.__doc__ = call.__doc__
    dispatch.__name__ = "__call__"
    return dispatch
