"""Derivative rules of SciPy functions: scipy.special and the norm / multivariate_normal
distributions of scipy.stats, written once for both AD engines.

Importing gradtest never imports SciPy. The rules are installed by :func:`install` when SciPy
is there: at once if ``scipy.special``/``scipy.stats`` is already imported when the engines
load, else right after the program imports it (a post-import hook on ``sys.meta_path`` that
does nothing else and removes itself).

Two kinds of SciPy callables, two ways in:

* **ufuncs** (``gammaln``, ``erf``, ``jv``, ``xlogy``, ...) reach the engines' ``__array_ufunc__``
  like NumPy's; their rules are registered in the one registry (:mod:`gradtest._rules`) and use
  :func:`gradtest._primitives.pointwise` with partials computed by scipy.special itself
  (``gammaln' = digamma``, ``jv'(v, x) = jvp(v, x)``, ``erfinv' = sqrt(pi)/2 exp(erfinv^2)``...).
  Arguments with no derivative rule (the order ``v`` of ``jv``/``iv``/..., ``n`` of
  ``polygamma``) raise NotImplementedError when they carry a derivative.
* **Python functions** that call ``np.asarray`` (``logsumexp``, ``softmax``, ``log_softmax``,
  ``polygamma``, ``spherical_jn``, ``scipy.stats.norm.logpdf/pdf/cdf/logcdf``,
  ``scipy.stats.multivariate_normal.logpdf/pdf``) never reach ``__array_function__``. For those,
  :func:`install` replaces the module attribute (``scipy.special.logsumexp``) or the
  distribution object's method (``scipy.stats.norm.logpdf``, which ``from scipy.stats import
  norm`` shares) by a dispatcher: called with gradtest's arrays it runs the rule here, written
  with NumPy calls and returning SciPy's own value; with anything else it calls SciPy's function
  unchanged. A name bound before installation (``from scipy.special import logsumexp`` run before
  gradtest's engines loaded) is SciPy's original and meets the engines' conversion error;
  ``scipy.special.logsumexp(...)`` through the module always dispatches.
"""

from __future__ import annotations

import functools
import operator
import importlib.machinery
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _primitives as P
from ._rules import KINKS, register, register_ufunc
from ._rules_interpolate import KINKS as _INTERPOLATE_KINKS
from ._rules_signal import KINKS as _SIGNAL_KINKS
from ._rules_spatial import KINKS as _SPATIAL_KINKS

__all__ = ["install", "installed"]

_LOCK = threading.Lock()
_DONE: set[str] = set()
_LOG_2PI = float(np.log(2.0 * np.pi))
_SQRT_2PI = float(np.sqrt(2.0 * np.pi))


def installed() -> frozenset[str]:
    """The SciPy modules whose rules are installed ("scipy.special", "scipy.stats")."""
    return frozenset(_DONE)


# ---- the kink and edge rules, for the shared table ------------------------------------------
# (written here without SciPy, so the table is the same whether or not SciPy is imported)

_ORDER = "the order v is a constant (differentiating it: NotImplementedError)"
_EXP_KINK = "kink at 0 (the abs(x) of exp(-abs(x))): sign(0) = 0 there"
#: scipy.special ufunc -> its kink/edge rule ("" for smooth on its domain).
UFUNC_KINKS: dict[str, str] = {
    "gammaln": "log(abs(gamma)): digamma, also for negative non-integers", "psi": "", "gamma": "",
    "loggamma": "real x > 0 (NaN elsewhere, as its value)", "erf": "", "erfc": "",
    "erfinv": "inf at -1 and 1", "erfcinv": "inf at 0 and 2", "expit": "", "logit": "",
    "ndtr": "", "log_ndtr": "exp(-x^2/2 - log_ndtr(x)) / sqrt(2 pi): no overflow in the left tail",
    "ndtri": "", "i0": "", "i1": "", "i0e": _EXP_KINK, "i1e": _EXP_KINK, "entr": "x > 0 (inf at 0)",
    "log_expit": "", "erfcx": "", "beta": "", "betaln": "",
    "xlogy": "0 in y where x == 0 (xlogy(0, y) = 0)", "xlog1py": "0 in y where x == 0",
    "rel_entr": "x, y > 0", "kl_div": "x, y > 0", "iv": _ORDER, "ive": _ORDER + "; " + _EXP_KINK,
    "jv": _ORDER, "yv": _ORDER, "kv": _ORDER, "kve": _ORDER, "yn": _ORDER,
    "gammasgn": "piecewise constant: returned as a plain array (no derivative)", "j0": "", "j1": "", "y0": "", "y1": "", "rgamma": "",
    "gammainc": "in x only (the shape a is a constant)", "gammaincc": "in x only (the shape a is a constant)",
    "betainc": "in x only (a and b are constants)", "stdtr": "in t only (df is a constant)",
    "pdtr": "in m only (k is a constant)", "pdtrc": "in m only (k is a constant)",
    "spence": "log(z)/(1 - z), -1 at z = 1", "ellipk": "pi/8 at m = 0", "ellipe": "-pi/8 at m = 0",
    "boxcox": "in x and lmbda (log(x)^2/2 at lmbda = 0)", "boxcox1p": "in x and lmbda (log1p(x)^2/2 at lmbda = 0)",
    "huber": "C1 at abs(r) = delta (both pieces agree)", "pseudo_huber": "",
}
_SPECIAL_KINKS = {
    "logsumexp": "the maximum shift is a constant; b and return_sign supported", "softmax": "",
    "log_softmax": "", "polygamma": "the order n is a constant", "spherical_jn": "the order n is a constant",
    "multigammaln": "the dimension d is a constant",
}
_STATS_KINKS = {
    **{f"norm.{m}": "x (or q), loc and scale differentiated"
       for m in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf", "ppf", "isf")},
    **{f"{d}.{m}": "x, shapes, loc and scale in logpdf/pdf; cdf/logcdf in x, loc and scale only"
       for d in ("t", "gamma", "beta", "chi2", "expon", "logistic", "laplace", "cauchy", "lognorm",
                 "weibull_min", "gumbel_r", "rayleigh", "halfnorm", "invgamma", "pareto")
       for m in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")},
    **{f"poisson.{m}": "in mu (k is a constant)" for m in ("logpmf", "pmf", "cdf")},
    **{f"binom.{m}": "in p (k and n are constants)" for m in ("logpmf", "pmf")},
    "dirichlet.logpdf": "x and alpha differentiated", "dirichlet.pdf": "x and alpha differentiated",
    **{f"multivariate_normal.{m}": "x, mean and cov differentiated; cov: its lower triangle is read "
       "(as SciPy's eigh does)" for m in ("logpdf", "pdf", "entropy")},
}
KINKS.update({f"scipy.special.{n}": k for n, k in {**UFUNC_KINKS, **_SPECIAL_KINKS}.items()})
KINKS.update({f"scipy.stats.{n}": k for n, k in _STATS_KINKS.items()})
_MODULE_KINKS = {
    "scipy.linalg.solve_triangular": "reads the named triangle only", "scipy.linalg.cholesky":
    "reads the triangle it returns (upper by default)", "scipy.linalg.cho_solve": "reads the factor's triangle",
    "scipy.linalg.cho_factor": "the factor's triangle (the other holds LAPACK's leftovers, no derivative)",
    "scipy.linalg.lu_factor": "dL = L tril(X, -1), dU = triu(X) U with X = L^-1 P^T dA U^-1 (square only)",
    "scipy.linalg.lu_solve": "solve with P L U rebuilt from the factors", "scipy.linalg.norm": "as numpy.linalg.norm",
    "scipy.linalg.inv": "general matrices (assume_a other than 'gen': NotImplementedError)",
    "scipy.linalg.det": "", "scipy.linalg.solve": "general matrices (assume_a other than 'gen': NotImplementedError)",
    "scipy.linalg.eigh": "as numpy.linalg.eigh (standard problem only)", "scipy.linalg.svd": "as numpy.linalg.svd",
    "scipy.linalg.qr": "as numpy.linalg.qr ('full' of a tall matrix: NotImplementedError)",
    "scipy.linalg.expm": "Frechet derivative by scaling and squaring",
    "scipy.linalg.sqrtm": "real square roots only (complex: NotImplementedError)",
    "scipy.linalg.solve_sylvester": "the Sylvester operator as a constant linear map",
    "scipy.signal.convolve": "", "scipy.signal.correlate": "",
    "scipy.signal.convolve2d": "zero fill only",
}
_MODULE_KINKS.update(_SPATIAL_KINKS)
_MODULE_KINKS.update(_SIGNAL_KINKS)
_MODULE_KINKS.update(_INTERPOLATE_KINKS)
KINKS.update(_MODULE_KINKS)


# ---- ufuncs ----------------------------------------------------------------------------------


def _no_derivative(name: str, what: str) -> NotImplementedError:
    return NotImplementedError(f"scipy.special.{name}: no derivative in {what} (it is held to be a "
                               "constant; pass a plain array or number for it)")


def _pointwise_call(value: np.ndarray, inputs: Sequence[Any], partials: Sequence[Any], name: str,
                    constant: bool = False,
                    partials_of: Callable[..., Sequence[Any]] | None = None) -> Any:
    """P.pointwise, with a 0-d result computed as one element and reshaped back (the reverse
    engine's pointwise gives a 0-d value the shape (1,))."""
    if value.ndim:
        return P.pointwise(value, list(inputs), list(partials), name, constant, partials_of)
    one = [np.reshape(x, (1,)) if P.is_active(x) and np.ndim(P.value(x)) == 0 else x for x in inputs]
    parts = [None if p is None else np.reshape(p, (1,)) for p in partials]
    return np.reshape(P.pointwise(np.reshape(value, (1,)), one, parts, name, constant, partials_of), ())


def _twice(value: np.ndarray, x: Any, slope: np.ndarray, curvature: np.ndarray, name: str) -> Any:
    """``value`` with first derivative ``slope`` and second derivative ``curvature`` in x, at x,
    from primitives whose second order the engines have: ``value + (x - x0) * h`` with
    ``h = slope`` in value and ``curvature / 2`` as a constant partial. At x = x0 its first
    derivative is h = slope and its second 2 h' = curvature, exactly; the primal is kept."""
    h = _pointwise_call(slope, [x], [0.5 * curvature], name, constant=True)
    y = value + (x - np.asarray(P.value(x))) * h
    return P.with_value(y, value) if value.ndim else np.reshape(P.with_value(np.reshape(y, (1,)), np.reshape(value, (1,))), ())


def _pointwise(ufunc: np.ufunc, inputs: Sequence[Any], partials: Callable[..., Sequence[Any]],
               constant_args: Sequence[int] = (), kwargs: dict[str, Any] | None = None,
               second: Callable[..., Any] | None = None) -> Any:
    """``ufunc(*inputs)`` with the partials ``partials(*primal inputs)``; the inputs at
    ``constant_args`` must not carry a derivative. ``second(*primal inputs, value, slope)``, when
    given, is the second derivative in the one input that carries a derivative, and gives the
    rule a second order."""
    name = ufunc.__name__
    for i in constant_args:
        if P.is_active(inputs[i]):
            raise _no_derivative(name, f"argument {i + 1}" if i else "its first argument")
    values = [P.value(x) for x in inputs]
    dtype = P.float_dtype(*values)
    values = [np.asarray(v, dtype=dtype) if P.is_active(x) else v for v, x in zip(values, inputs)]
    with np.errstate(all="ignore"):
        y = np.asarray(ufunc(*values, **(kwargs or {})))
        parts = [None if (i in constant_args or not P.is_active(x)) else np.asarray(p, dtype=y.dtype)
                 for i, (x, p) in enumerate(zip(inputs, partials(*values)))]
        active = [i for i, x in enumerate(inputs) if P.is_active(x)]
        # the second derivative only where it is recorded (reverse order 2): elsewhere nobody
        # reads it, and it may cost more than the function (polygamma for digamma)
        twice = second is not None and len(active) == 1 and P.records_second_order(inputs)
        if twice:
            i = active[0]
            slope = np.broadcast_to(parts[i], y.shape)
            curvature = np.broadcast_to(np.asarray(second(*values, y, slope), dtype=y.dtype), y.shape)
    if twice:
        return _twice(y, inputs[i], np.ascontiguousarray(slope), np.ascontiguousarray(curvature),
                      f"scipy.special.{name}")

    def partials_of(*xs: Any) -> list[Any]:
        # the same partials from the recorded inputs (reverse order 2 differentiates them once)
        return [None if p is None else q for p, q in zip(parts, partials(*xs))]

    return _pointwise_call(y, list(inputs), parts, f"scipy.special.{name}", partials_of=partials_of)


def _unary(name: str, derivative: Callable[[np.ndarray, np.ndarray], Any],
           second: Callable[[np.ndarray, np.ndarray, np.ndarray], Any] | None = None) -> None:
    """A one-argument ufunc: ``derivative(x, y)`` its first derivative, ``second(x, y, g)`` its
    second (g the first)."""
    import scipy.special as sc
    ufunc = getattr(sc, name)

    def rule(x: Any, **kwargs: Any) -> Any:
        return _pointwise(ufunc, [x], lambda v: [derivative(v, ufunc(v))], kwargs=kwargs, second=second)

    register_ufunc(ufunc, kink=UFUNC_KINKS[name])(rule)


def _binary(name: str, partials: Callable[..., Sequence[Any]], constant_args: Sequence[int] = (),
            second: Callable[..., Any] | None = None) -> None:
    """A two-argument ufunc; ``second(a, b, y, g)``: the second derivative in its one
    differentiated argument (for the functions whose other argument is a constant)."""
    import scipy.special as sc
    ufunc = getattr(sc, name)

    def rule(a: Any, b: Any, **kwargs: Any) -> Any:
        return _pointwise(ufunc, [a, b], partials, constant_args, kwargs, second)

    register_ufunc(ufunc, kink=UFUNC_KINKS[name])(rule)


def _install_ufuncs() -> None:
    import scipy.special as sc

    sqrt_pi = float(np.sqrt(np.pi))
    _unary("gammaln", lambda x, y: sc.digamma(x), lambda x, y, g: sc.polygamma(1, x))
    _unary("psi", lambda x, y: sc.polygamma(1, x), lambda x, y, g: sc.polygamma(2, x))  # digamma is the same ufunc object
    _unary("gamma", lambda x, y: y * sc.digamma(x), lambda x, y, g: y * (sc.digamma(x) ** 2 + sc.polygamma(1, x)))
    _unary("loggamma", lambda x, y: sc.digamma(x), lambda x, y, g: sc.polygamma(1, x))
    _unary("erf", lambda x, y: (2.0 / sqrt_pi) * np.exp(-x * x), lambda x, y, g: -2.0 * x * g)
    _unary("erfc", lambda x, y: (-2.0 / sqrt_pi) * np.exp(-x * x), lambda x, y, g: -2.0 * x * g)
    _unary("erfinv", lambda x, y: (sqrt_pi / 2.0) * np.exp(y * y), lambda x, y, g: 2.0 * y * g * g)
    _unary("erfcinv", lambda x, y: (-sqrt_pi / 2.0) * np.exp(y * y), lambda x, y, g: 2.0 * y * g * g)
    _unary("expit", lambda x, y: y * (1.0 - y), lambda x, y, g: g * (1.0 - 2.0 * y))
    _unary("logit", lambda x, y: 1.0 / (x * (1.0 - x)), lambda x, y, g: (2.0 * x - 1.0) * g * g)
    _unary("ndtr", lambda x, y: np.exp(-0.5 * x * x) / _SQRT_2PI, lambda x, y, g: -x * g)
    _unary("log_ndtr", lambda x, y: np.exp(-0.5 * x * x - y) / _SQRT_2PI, lambda x, y, g: -g * (x + g))
    _unary("ndtri", lambda p, y: _SQRT_2PI * np.exp(0.5 * y * y), lambda p, y, g: y * g * g)
    _unary("i0", lambda x, y: sc.i1(x), lambda x, y, g: 0.5 * (sc.i0(x) + sc.iv(2, x)))
    _unary("i1", lambda x, y: 0.5 * (sc.i0(x) + sc.iv(2, x)), lambda x, y, g: 0.25 * (3.0 * sc.i1(x) + sc.iv(3, x)))
    _unary("i0e", lambda x, y: sc.i1e(x) - np.sign(x) * y)
    _unary("i1e", lambda x, y: 0.5 * (sc.i0e(x) + sc.ive(2, x)) - np.sign(x) * y)
    _unary("entr", lambda x, y: -(np.log(x) + 1.0), lambda x, y, g: -1.0 / x)
    _unary("j0", lambda x, y: -sc.j1(x), lambda x, y, g: -0.5 * (sc.j0(x) - sc.jv(2, x)))
    _unary("j1", lambda x, y: 0.5 * (sc.j0(x) - sc.jv(2, x)), lambda x, y, g: 0.25 * (sc.jv(3, x) - 3.0 * sc.j1(x)))
    _unary("y0", lambda x, y: -sc.y1(x), lambda x, y, g: -0.5 * (sc.y0(x) - sc.yv(2, x)))
    _unary("y1", lambda x, y: 0.5 * (sc.y0(x) - sc.yv(2, x)), lambda x, y, g: 0.25 * (sc.yv(3, x) - 3.0 * sc.y1(x)))
    _unary("rgamma", lambda x, y: -y * sc.digamma(x), lambda x, y, g: y * (sc.digamma(x) ** 2 - sc.polygamma(1, x)))
    _unary("log_expit", lambda x, y: sc.expit(-x), lambda x, y, g: -g * (1.0 - g))
    _unary("erfcx", lambda x, y: 2.0 * x * y - 2.0 / sqrt_pi, lambda x, y, g: 2.0 * y + 2.0 * x * g)

    def beta_partials(a: Any, b: Any) -> list[Any]:
        y = sc.beta(a, b)
        dab = sc.digamma(a + b)
        return [y * (sc.digamma(a) - dab), y * (sc.digamma(b) - dab)]

    def betaln_partials(a: Any, b: Any) -> list[Any]:
        dab = sc.digamma(a + b)
        return [sc.digamma(a) - dab, sc.digamma(b) - dab]

    _binary("beta", beta_partials)
    _binary("betaln", betaln_partials)
    _binary("xlogy", lambda x, y: [np.log(y), _zero_where_x_is(x, y, x / y)])
    _binary("xlog1py", lambda x, y: [np.log1p(y), _zero_where_x_is(x, 1.0 + y, x / (1.0 + y))])
    _binary("rel_entr", lambda x, y: [np.log(x / y) + 1.0, -x / y])
    _binary("kl_div", lambda x, y: [np.log(x / y), 1.0 - x / y])
    # Bessel functions: derivative in x only; the order v is a constant
    _binary("iv", lambda v, x: [None, 0.5 * (sc.iv(v - 1, x) + sc.iv(v + 1, x))], (0,),
            lambda v, x, y, g: 0.25 * (sc.iv(v - 2, x) + 2.0 * y + sc.iv(v + 2, x)))
    _binary("ive", lambda v, x: [None, 0.5 * (sc.ive(v - 1, x) + sc.ive(v + 1, x)) - np.sign(x) * sc.ive(v, x)],
            (0,))
    _binary("jv", lambda v, x: [None, 0.5 * (sc.jv(v - 1, x) - sc.jv(v + 1, x))], (0,),
            lambda v, x, y, g: 0.25 * (sc.jv(v - 2, x) - 2.0 * y + sc.jv(v + 2, x)))
    _binary("yv", lambda v, x: [None, 0.5 * (sc.yv(v - 1, x) - sc.yv(v + 1, x))], (0,),
            lambda v, x, y, g: 0.25 * (sc.yv(v - 2, x) - 2.0 * y + sc.yv(v + 2, x)))
    _binary("yn", lambda n, x: [None, 0.5 * (sc.yn(n - 1, x) - sc.yn(n + 1, x))], (0,),
            lambda n, x, y, g: 0.25 * (sc.yn(n - 2, x) - 2.0 * y + sc.yn(n + 2, x)))
    # incomplete gamma and beta functions, regularised: in x, the integrand; shapes are constants
    _binary("gammainc", lambda a, x: [None, np.exp((a - 1.0) * np.log(x) - x - sc.gammaln(a))], (0,),
            lambda a, x, y, g: g * ((a - 1.0) / x - 1.0))
    _binary("gammaincc", lambda a, x: [None, -np.exp((a - 1.0) * np.log(x) - x - sc.gammaln(a))], (0,),
            lambda a, x, y, g: g * ((a - 1.0) / x - 1.0))
    _binary("stdtr", lambda df, t: [None, np.exp(_t_logpdf(sc, t, df))], (0,),
            lambda df, t, y, g: -g * (df + 1.0) * t / (df + t * t))
    _binary("pdtr", lambda k, m: [None, -np.exp(sc.xlogy(k, m) - m - sc.gammaln(k + 1.0))], (0,),
            lambda k, m, y, g: g * (k / m - 1.0))
    _binary("pdtrc", lambda k, m: [None, np.exp(sc.xlogy(k, m) - m - sc.gammaln(k + 1.0))], (0,),
            lambda k, m, y, g: g * (k / m - 1.0))
    _ternary_betainc(sc)
    _binary("kv", lambda v, x: [None, -0.5 * (sc.kv(v - 1, x) + sc.kv(v + 1, x))], (0,),
            lambda v, x, y, g: 0.25 * (sc.kv(v - 2, x) + 2.0 * y + sc.kv(v + 2, x)))
    _binary("kve", lambda v, x: [None, -0.5 * (sc.kve(v - 1, x) + sc.kve(v + 1, x)) + np.sign(x) * sc.kve(v, x)],
            (0,))
    # the removable singularities of these derivatives take their limits
    _unary("spence", lambda x, y: np.where(x == 1.0, -1.0, np.log(x) / (1.0 - x)))
    _unary("ellipk", lambda m, y: np.where(m == 0.0, np.pi / 8.0, (sc.ellipe(m) - (1.0 - m) * y) / (2.0 * m * (1.0 - m))))
    _unary("ellipe", lambda m, y: np.where(m == 0.0, -np.pi / 8.0, (y - sc.ellipk(m)) / (2.0 * m)))

    def boxcox_partials(log: Callable[..., Any], shift: float) -> Callable[..., list[Any]]:
        def partials(x: Any, lmbda: Any) -> list[Any]:
            lx, p = log(x), (x + shift) ** lmbda
            return [(x + shift) ** (lmbda - 1.0),
                    np.where(lmbda == 0.0, 0.5 * lx * lx, (p * lx - (p - 1.0) / lmbda) / lmbda)]
        return partials

    _binary("boxcox", boxcox_partials(np.log, 0.0))
    _binary("boxcox1p", boxcox_partials(np.log1p, 1.0))

    def huber_partials(delta: Any, r: Any) -> list[Any]:
        inside = np.abs(r) <= delta
        return [np.where(inside, 0.0, np.abs(r) - delta), np.where(inside, r, delta * np.sign(r))]

    def pseudo_huber_partials(delta: Any, r: Any) -> list[Any]:
        q = np.sqrt(1.0 + (r / delta) ** 2)
        return [2.0 * delta * (q - 1.0) - r * r / (delta * q), r / q]

    _binary("huber", huber_partials)
    _binary("pseudo_huber", pseudo_huber_partials)


def _zero_where_x_is(x: Any, d: Any, ratio: Any) -> Any:
    """``x / d`` (given as ``ratio``), but 0 where x == 0 and d is 0 or not finite (where the
    ratio is NaN): xlogy(0, y) is 0 for every y. Elsewhere the ratio itself is kept, also at
    x == 0, so that its derivative in x (1 / d, the mixed second partial) stays right."""
    xv, dv = np.asarray(P.value(x)), np.asarray(P.value(d))
    return np.where((xv == 0) & ((dv == 0) | ~np.isfinite(dv)), 0.0, ratio)


def _t_logpdf(sc: Any, t: Any, df: Any) -> Any:
    """log of Student's t density (plain arrays)."""
    return (sc.gammaln((df + 1.0) / 2.0) - sc.gammaln(df / 2.0) - 0.5 * np.log(df * np.pi)
            - (df + 1.0) / 2.0 * np.log1p(t * t / df))


def _ternary_betainc(sc: Any) -> None:
    ufunc = sc.betainc

    def partials(a: Any, b: Any, x: Any) -> list[Any]:
        return [None, None, np.exp(sc.xlogy(a - 1.0, x) + sc.xlog1py(b - 1.0, -x) - sc.betaln(a, b))]

    def second(a: Any, b: Any, x: Any, y: Any, g: Any) -> Any:
        return g * ((a - 1.0) / x - (b - 1.0) / (1.0 - x))

    def rule(a: Any, b: Any, x: Any, **kwargs: Any) -> Any:
        return _pointwise(ufunc, [a, b, x], partials, (0, 1), kwargs, second)

    register_ufunc(ufunc, kink=UFUNC_KINKS["betainc"])(rule)


# ---- Python functions of scipy.special (dispatchers) ----------------------------------------


def _active(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    return P.engine_of(*args, *kwargs.values()) is not None


def _dispatcher(original: Callable[..., Any], rule: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` for plain arguments, ``rule`` when any argument is one of gradtest's arrays."""

    @functools.wraps(original)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        if _active(args, kwargs):
            return rule(*args, **kwargs)
        return original(*args, **kwargs)

    dispatch.__gradtest_original__ = original  # type: ignore[attr-defined]
    return dispatch


def _original(f: Any) -> Any:
    return getattr(f, "__gradtest_original__", f)


def _keep_value(y: Any, value: Any) -> Any:
    """y's derivative with SciPy's own value (the composition may round differently)."""
    value = np.asarray(value)
    if not P.is_active(y):
        return value
    return P.with_value(y, value.astype(y.value.dtype, copy=False))


def _special_functions(sc: Any) -> dict[str, Callable[..., Any]]:
    logsumexp_0 = _original(sc.logsumexp)
    softmax_0 = _original(sc.softmax)
    log_softmax_0 = _original(sc.log_softmax)
    polygamma_0 = _original(sc.polygamma)
    spherical_jn_0 = _original(sc.spherical_jn)

    def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False,
                  return_sign: bool = False) -> Any:
        value = logsumexp_0(P.value(a), axis=axis, b=P.value(b), keepdims=keepdims,
                            return_sign=return_sign)
        av = np.asarray(P.value(a))
        # the shift by the maximum only keeps exp in range: it is a constant
        with np.errstate(invalid="ignore"):
            shift = np.max(av, axis=axis, keepdims=True) if av.size else np.zeros([1] * av.ndim)
        shift = np.where(np.isfinite(shift), shift, 0.0)
        e = np.exp(a - shift)
        s = np.sum(e if b is None else b * e, axis=axis, keepdims=True)
        out = np.log(np.abs(s) if return_sign else s) + shift
        if not keepdims:
            out = np.squeeze(out, axis=axis) if axis is not None else np.reshape(out, ())
        if return_sign:
            return _keep_value(out, value[0]), value[1]
        return _keep_value(out, value)

    def softmax(x: Any, axis: Any = None) -> Any:
        xv = np.asarray(P.value(x))
        shift = np.max(xv, axis=axis, keepdims=True)
        e = np.exp(x - np.where(np.isfinite(shift), shift, 0.0))
        return _keep_value(e / np.sum(e, axis=axis, keepdims=True), softmax_0(xv, axis=axis))

    def log_softmax(x: Any, axis: Any = None) -> Any:
        xv = np.asarray(P.value(x))
        return _keep_value(x - logsumexp(x, axis=axis, keepdims=True), log_softmax_0(xv, axis=axis))

    def polygamma(n: Any, x: Any) -> Any:
        if P.is_active(n):
            raise _no_derivative("polygamma", "the order n")
        n = np.asarray(n)
        xv = P.value(x)
        dt = P.float_dtype(xv)
        value = np.asarray(polygamma_0(n, xv), dtype=dt)
        shape = value.shape
        return _twice(value, x, np.broadcast_to(np.asarray(polygamma_0(n + 1, xv), dtype=dt), shape).copy(),
                      np.broadcast_to(np.asarray(polygamma_0(n + 2, xv), dtype=dt), shape).copy(),
                      "scipy.special.polygamma")

    def spherical_jn(n: Any, z: Any, derivative: bool = False) -> Any:
        if P.is_active(n):
            raise _no_derivative("spherical_jn", "the order n")
        if derivative:
            raise NotImplementedError("scipy.special.spherical_jn(..., derivative=True) is not "
                                      "supported by gradtest's AD engines")
        zv = P.value(z)
        dt = P.float_dtype(zv)
        y = np.asarray(spherical_jn_0(n, zv), dtype=dt)
        g = np.asarray(spherical_jn_0(n, zv, derivative=True), dtype=dt)
        # the spherical Bessel equation: z^2 y'' + 2 z y' + (z^2 - n(n+1)) y = 0
        nn = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            curvature = np.asarray(-2.0 * g / zv - (1.0 - nn * (nn + 1.0) / (zv * zv)) * y, dtype=dt)
        return _twice(y, z, np.broadcast_to(g, y.shape).copy(), np.broadcast_to(curvature, y.shape).copy(),
                      "scipy.special.spherical_jn")

    multigammaln_0 = _original(sc.multigammaln)

    def multigammaln(a: Any, d: Any) -> Any:
        if P.is_active(d):
            raise _no_derivative("multigammaln", "the dimension d")
        d = operator.index(d)
        value = multigammaln_0(P.value(a), d)
        # log Gamma_d(a) = d(d-1)/4 log(pi) + sum_j gammaln(a - j/2)
        y = d * (d - 1) / 4.0 * np.log(np.pi)
        for j in range(d):
            y = y + sc.gammaln(a - j / 2.0)
        return _keep_value(y, value)

    return {"logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax,
            "polygamma": polygamma, "spherical_jn": spherical_jn, "multigammaln": multigammaln}


def _install_special() -> None:
    import scipy.special as sc
    _install_ufuncs()
    # piecewise constant; registered as a rule rather than as non-differentiable so that its
    # row of the shared table does not depend on SciPy being imported
    register_ufunc(sc.gammasgn, kink=UFUNC_KINKS["gammasgn"])(
        lambda x, **kwargs: sc.gammasgn(P.value(x), **kwargs))
    for name, rule in _special_functions(sc).items():
        original = _original(getattr(sc, name))
        register(original, kink=_SPECIAL_KINKS.get(name, ""))(rule)
        setattr(sc, name, _dispatcher(original, rule))


# ---- scipy.stats -----------------------------------------------------------------------------


def _norm_rules(norm: Any) -> dict[str, Callable[..., Any]]:
    import scipy.special as sc
    originals = {name: _original(getattr(norm, name)) for name in
                 ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf", "ppf", "isf")}

    def parts(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> tuple[Any, Any]:
        return (x - loc) / scale, scale

    def plain(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return originals[name](*P.values(args), **P.values(kwargs))

    def logpdf(*args: Any, **kwargs: Any) -> Any:
        z, scale = parts(*args, **kwargs)
        return _keep_value(-0.5 * z * z - np.log(scale) - 0.5 * _LOG_2PI, plain("logpdf", args, kwargs))

    def pdf(*args: Any, **kwargs: Any) -> Any:
        z, scale = parts(*args, **kwargs)
        return _keep_value(np.exp(-0.5 * z * z) / (scale * _SQRT_2PI), plain("pdf", args, kwargs))

    def cdf(*args: Any, **kwargs: Any) -> Any:
        z, _ = parts(*args, **kwargs)
        return _keep_value(sc.ndtr(z), plain("cdf", args, kwargs))

    def logcdf(*args: Any, **kwargs: Any) -> Any:
        z, _ = parts(*args, **kwargs)
        return _keep_value(sc.log_ndtr(z), plain("logcdf", args, kwargs))

    def sf(*args: Any, **kwargs: Any) -> Any:
        z, _ = parts(*args, **kwargs)
        return _keep_value(sc.ndtr(-z), plain("sf", args, kwargs))

    def logsf(*args: Any, **kwargs: Any) -> Any:
        z, _ = parts(*args, **kwargs)
        return _keep_value(sc.log_ndtr(-z), plain("logsf", args, kwargs))

    def quantile(q: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
        return loc + scale * sc.ndtri(q)

    def ppf(*args: Any, **kwargs: Any) -> Any:
        return _keep_value(quantile(*args, **kwargs), plain("ppf", args, kwargs))

    def isf(*args: Any, **kwargs: Any) -> Any:
        value = plain("isf", args, kwargs)
        kw = dict(kwargs)
        q, rest = (args[0], args[1:]) if args else (kw.pop("q"), ())
        return _keep_value(quantile(1.0 - q, *rest, **kw), value)

    return {"logpdf": logpdf, "pdf": pdf, "cdf": cdf, "logcdf": logcdf, "sf": sf, "logsf": logsf,
            "ppf": ppf, "isf": isf}


def _location_scale_rules(dist: Any, logpdf_std: Callable[..., Any], cdf_std: Callable[..., Any],
                          nshapes: int) -> dict[str, Callable[..., Any]]:
    """logpdf/pdf/cdf/logcdf of a location-scale family from its standard log density and
    distribution function; the arguments parse as SciPy's do: x, the shapes, loc, scale."""
    originals = {name: _original(getattr(dist, name)) for name in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")}

    def parse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[Any], Any, Any]:
        args = list(args)
        x = args.pop(0) if args else kwargs.pop("x")
        shapes = [args.pop(0) if args else kwargs.pop(name) for name in dist.shapes.replace(" ", "").split(",")] \
            if nshapes else []
        loc = args.pop(0) if args else kwargs.pop("loc", 0.0)
        scale = args.pop(0) if args else kwargs.pop("scale", 1.0)
        if args or kwargs:
            raise TypeError(f"scipy.stats.{dist.name}: unexpected arguments")
        return x, shapes, loc, scale

    def plain(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return originals[name](*P.values(args), **P.values(kwargs))

    def logpdf(*args: Any, **kwargs: Any) -> Any:
        value = plain("logpdf", args, kwargs)
        x, shapes, loc, scale = parse(args, dict(kwargs))
        return _keep_value(logpdf_std((x - loc) / scale, *shapes) - np.log(scale), value)

    def pdf(*args: Any, **kwargs: Any) -> Any:
        value = plain("pdf", args, kwargs)
        x, shapes, loc, scale = parse(args, dict(kwargs))
        return _keep_value(np.exp(logpdf_std((x - loc) / scale, *shapes)) / scale, value)

    def cdf(*args: Any, **kwargs: Any) -> Any:
        value = plain("cdf", args, kwargs)
        x, shapes, loc, scale = parse(args, dict(kwargs))
        return _keep_value(cdf_std((x - loc) / scale, *shapes), value)

    def logcdf(*args: Any, **kwargs: Any) -> Any:
        value = plain("logcdf", args, kwargs)
        x, shapes, loc, scale = parse(args, dict(kwargs))
        return _keep_value(np.log(cdf_std((x - loc) / scale, *shapes)), value)

    def sf(*args: Any, **kwargs: Any) -> Any:
        value = plain("sf", args, kwargs)
        x, shapes, loc, scale = parse(args, dict(kwargs))
        return _keep_value(1.0 - cdf_std((x - loc) / scale, *shapes), value)

    def logsf(*args: Any, **kwargs: Any) -> Any:
        value = plain("logsf", args, kwargs)
        x, shapes, loc, scale = parse(args, dict(kwargs))
        return _keep_value(np.log1p(-cdf_std((x - loc) / scale, *shapes)), value)

    return {"logpdf": logpdf, "pdf": pdf, "cdf": cdf, "logcdf": logcdf, "sf": sf, "logsf": logsf}


def _family_rules(st: Any) -> list[tuple[str, Any, dict[str, Callable[..., Any]]]]:
    import scipy.special as sc
    half_log_pi = 0.5 * float(np.log(np.pi))

    def t_logpdf(z: Any, df: Any) -> Any:
        return (sc.gammaln((df + 1.0) / 2.0) - sc.gammaln(df / 2.0) - 0.5 * np.log(df) - half_log_pi
                - (df + 1.0) / 2.0 * np.log1p(z * z / df))

    families = {
        "t": (t_logpdf, lambda z, df: sc.stdtr(df, z), 1),
        "gamma": (lambda z, a: sc.xlogy(a - 1.0, z) - z - sc.gammaln(a), lambda z, a: sc.gammainc(a, z), 1),
        "beta": (lambda z, a, b: sc.xlogy(a - 1.0, z) + sc.xlog1py(b - 1.0, -z) - sc.betaln(a, b),
                 lambda z, a, b: sc.betainc(a, b, z), 2),
        "chi2": (lambda z, df: sc.xlogy(df / 2.0 - 1.0, z) - z / 2.0 - sc.gammaln(df / 2.0) - df / 2.0 * np.log(2.0),
                 lambda z, df: sc.gammainc(df / 2.0, z / 2.0), 1),
        "expon": (lambda z: -z, lambda z: -np.expm1(-z), 0),
        "logistic": (lambda z: -z - 2.0 * np.log1p(np.exp(-z)), lambda z: sc.expit(z), 0),
        "laplace": (lambda z: -np.abs(z) - np.log(2.0), lambda z: np.where(primal_lt0(z), 0.5 * np.exp(z),
                                                                          1.0 - 0.5 * np.exp(-z)), 0),
        "cauchy": (lambda z: -np.log(np.pi) - np.log1p(z * z), lambda z: 0.5 + np.arctan(z) / np.pi, 0),
        "lognorm": (lambda z, s: -np.log(s * z) - 0.5 * _LOG_2PI - 0.5 * (np.log(z) / s) ** 2,
                    lambda z, s: sc.ndtr(np.log(z) / s), 1),
        "weibull_min": (lambda z, c: np.log(c) + sc.xlogy(c - 1.0, z) - z ** c, lambda z, c: -np.expm1(-z ** c), 1),
        "gumbel_r": (lambda z: -z - np.exp(-z), lambda z: np.exp(-np.exp(-z)), 0),
        "rayleigh": (lambda z: np.log(z) - 0.5 * z * z, lambda z: -np.expm1(-0.5 * z * z), 0),
        "halfnorm": (lambda z: 0.5 * np.log(2.0 / np.pi) - 0.5 * z * z, lambda z: sc.erf(z / np.sqrt(2.0)), 0),
        "invgamma": (lambda z, a: -sc.gammaln(a) - (a + 1.0) * np.log(z) - 1.0 / z,
                     lambda z, a: sc.gammaincc(a, 1.0 / z), 1),
        "pareto": (lambda z, b: np.log(b) - (b + 1.0) * np.log(z), lambda z, b: -np.expm1(-b * np.log(z)), 1),
    }
    return [(name, getattr(st, name), _location_scale_rules(getattr(st, name), lp, cdf, n))
            for name, (lp, cdf, n) in families.items()]


def primal_lt0(z: Any) -> np.ndarray:
    return np.asarray(P.value(z)) < 0


def _poisson_rules(poisson: Any) -> dict[str, Callable[..., Any]]:
    import scipy.special as sc
    originals = {name: _original(getattr(poisson, name)) for name in ("logpmf", "pmf", "cdf")}

    def parse(k: Any, mu: Any, loc: Any = 0) -> tuple[Any, Any]:
        if P.is_active(k) or P.is_active(loc):
            raise NotImplementedError("scipy.stats.poisson: k and loc are integers (no derivative)")
        return np.asarray(k) - loc, mu

    def logpmf(*args: Any, **kwargs: Any) -> Any:
        value = originals["logpmf"](*P.values(args), **P.values(kwargs))
        k, mu = parse(*args, **kwargs)
        return _keep_value(sc.xlogy(k, mu) - mu - sc.gammaln(k + 1.0), value)

    def pmf(*args: Any, **kwargs: Any) -> Any:
        value = originals["pmf"](*P.values(args), **P.values(kwargs))
        k, mu = parse(*args, **kwargs)
        return _keep_value(np.exp(sc.xlogy(k, mu) - mu - sc.gammaln(k + 1.0)), value)

    def cdf(*args: Any, **kwargs: Any) -> Any:
        value = originals["cdf"](*P.values(args), **P.values(kwargs))
        k, mu = parse(*args, **kwargs)
        return _keep_value(sc.pdtr(np.floor(k), mu), value)

    return {"logpmf": logpmf, "pmf": pmf, "cdf": cdf}


def _binom_rules(binom: Any) -> dict[str, Callable[..., Any]]:
    import scipy.special as sc
    originals = {name: _original(getattr(binom, name)) for name in ("logpmf", "pmf")}

    def log_mass(k: Any, n: Any, p: Any, loc: Any = 0) -> Any:
        if P.is_active(k) or P.is_active(n) or P.is_active(loc):
            raise NotImplementedError("scipy.stats.binom: k, n and loc are integers (no derivative)")
        k = np.asarray(k) - loc
        n = np.asarray(n)
        return (sc.gammaln(n + 1.0) - sc.gammaln(k + 1.0) - sc.gammaln(n - k + 1.0)
                + sc.xlogy(k, p) + sc.xlog1py(n - k, -p))

    def logpmf(*args: Any, **kwargs: Any) -> Any:
        return _keep_value(log_mass(*args, **kwargs), originals["logpmf"](*P.values(args), **P.values(kwargs)))

    def pmf(*args: Any, **kwargs: Any) -> Any:
        return _keep_value(np.exp(log_mass(*args, **kwargs)), originals["pmf"](*P.values(args), **P.values(kwargs)))

    return {"logpmf": logpmf, "pmf": pmf}


def _dirichlet_rules(dirichlet: Any) -> dict[str, Callable[..., Any]]:
    import scipy.special as sc
    originals = {name: _original(getattr(dirichlet, name)) for name in ("logpdf", "pdf")}

    def logdensity(x: Any, alpha: Any) -> Any:
        # SciPy's quantiles run along the first axis: x is (K,) or (K, N)
        a = alpha if P.is_active(alpha) else np.asarray(alpha, dtype=np.float64)
        nd = np.ndim(P.value(x))
        shaped = np.reshape(a, (-1,) + (1,) * (nd - 1))
        norm = np.sum(sc.gammaln(a)) - sc.gammaln(np.sum(a))
        return np.sum(sc.xlogy(shaped - 1.0, x), axis=0) - norm

    def logpdf(x: Any, alpha: Any) -> Any:
        return _keep_value(logdensity(x, alpha), originals["logpdf"](P.value(x), P.value(alpha)))

    def pdf(x: Any, alpha: Any) -> Any:
        return _keep_value(np.exp(logdensity(x, alpha)), originals["pdf"](P.value(x), P.value(alpha)))

    return {"logpdf": logpdf, "pdf": pdf}


def _mvn_rules(mvn: Any) -> dict[str, Callable[..., Any]]:
    originals = {name: _original(getattr(mvn, name)) for name in ("logpdf", "pdf", "entropy")}

    def logdensity(x: Any, mean: Any = None, cov: Any = 1, allow_singular: bool = False) -> Any:
        xv = np.asarray(P.value(x))
        mv = None if mean is None else np.asarray(P.value(mean))
        cv = np.asarray(P.value(cov))
        dim = mv.shape[-1] if mv is not None and mv.ndim else (cv.shape[-1] if cv.ndim else
                                                               (xv.shape[-1] if xv.ndim else 1))
        if dim == 1:
            raise NotImplementedError("scipy.stats.multivariate_normal of dimension 1 on gradtest's "
                                      "arrays: use scipy.stats.norm")
        dev = x if mean is None else x - mean
        if cv.ndim == 0:
            # cov = c * I
            maha = np.sum(dev * dev, axis=-1) / cov
            logdet = dim * np.log(cov)
        elif cv.ndim == 1:
            # a diagonal covariance given by its diagonal
            maha = np.sum(dev * dev / cov, axis=-1)
            logdet = np.sum(np.log(cov))
        else:
            # SciPy factors cov with eigh(lower=True), which reads its lower triangle, as
            # cholesky does here
            chol = np.linalg.cholesky(cov)
            z = np.linalg.solve(chol, np.swapaxes(np.reshape(dev, (-1, dim)), 0, 1))
            maha = np.reshape(np.sum(z * z, axis=0), np.shape(xv)[:-1])
            logdet = 2.0 * np.sum(np.log(np.diagonal(chol)))
        return -0.5 * (dim * _LOG_2PI + logdet + maha)

    def call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("allow_singular"):
            raise NotImplementedError("scipy.stats.multivariate_normal(..., allow_singular=True) on "
                                      "gradtest's arrays")
        return originals[name](*P.values(args), **P.values(kwargs))

    def logpdf(*args: Any, **kwargs: Any) -> Any:
        value = call("logpdf", args, kwargs)
        return _keep_value(logdensity(*args, **kwargs), value)

    def pdf(*args: Any, **kwargs: Any) -> Any:
        value = call("pdf", args, kwargs)
        return _keep_value(np.exp(logdensity(*args, **kwargs)), value)

    def entropy(mean: Any = None, cov: Any = 1) -> Any:
        value = originals["entropy"](P.value(mean), P.value(cov))
        cv = np.asarray(P.value(cov))
        if cv.ndim != 2:
            raise NotImplementedError("scipy.stats.multivariate_normal.entropy on gradtest's arrays needs "
                                      "a full covariance matrix")
        dim = cv.shape[-1]
        # SciPy factors cov through its lower triangle, as cholesky does here
        logdet = 2.0 * np.sum(np.log(np.diagonal(np.linalg.cholesky(cov))))
        return _keep_value(0.5 * (dim * (1.0 + _LOG_2PI) + logdet), value)

    return {"logpdf": logpdf, "pdf": pdf, "entropy": entropy}


def _install_stats() -> None:
    import scipy.stats as st
    for label, dist, rules in [("norm", st.norm, _norm_rules(st.norm)),
                               ("multivariate_normal", st.multivariate_normal,
                                _mvn_rules(st.multivariate_normal)),
                               ("poisson", st.poisson, _poisson_rules(st.poisson)),
                               ("binom", st.binom, _binom_rules(st.binom)),
                               ("dirichlet", st.dirichlet, _dirichlet_rules(st.dirichlet))] + _family_rules(st):
        for name, rule in rules.items():
            original = _original(getattr(dist, name))
            # the distribution objects are shared (``from scipy.stats import norm``): an
            # instance attribute reaches every user of them
            setattr(dist, name, _dispatcher(original, rule))


# ---- scipy.linalg and scipy.signal ------------------------------------------------------------


def _linalg_rules(sl: Any) -> dict[str, Callable[..., Any]]:
    """scipy.linalg functions as compositions of the numpy.linalg rules (values: SciPy's own);
    expm and sqrtm through their Frechet derivatives."""
    originals = {name: _original(getattr(sl, name)) for name in
                 ("solve_sylvester", "solve_triangular", "cholesky", "cho_solve", "inv", "det", "solve", "eigh",
                  "expm", "sqrtm", "svd", "qr", "cho_factor", "lu_factor", "lu_solve", "norm")}

    def refuse(name: str, what: str) -> NotImplementedError:
        return NotImplementedError(f"scipy.linalg.{name}({what}) is not supported by gradtest's AD engines")

    def triangle(a: Any, lower: bool, unit: bool = False) -> Any:
        t = np.tril(a) if lower else np.triu(a)
        if unit:
            n = np.shape(P.value(a))[-1]
            eye = np.eye(n)
            t = t * (1.0 - eye) + eye
        return t

    def solve_triangular(a: Any, b: Any, trans: Any = 0, lower: bool = False, unit_diagonal: bool = False,
                         overwrite_b: bool = False, check_finite: bool = True) -> Any:
        value = originals["solve_triangular"](P.value(a), P.value(b), trans=trans, lower=lower,
                                              unit_diagonal=unit_diagonal)
        if trans not in (0, 1, "N", "T"):
            raise refuse("solve_triangular", f"..., trans={trans!r}")
        t = triangle(a, lower, unit_diagonal)
        if trans in (1, "T"):
            t = np.swapaxes(t, -1, -2)
        return _keep_value(np.linalg.solve(t, b), value)

    def cholesky(a: Any, lower: bool = False, overwrite_a: bool = False, check_finite: bool = True) -> Any:
        value = originals["cholesky"](P.value(a), lower=lower)
        # LAPACK reads the triangle it returns, as numpy.linalg.cholesky(upper=...) does
        return _keep_value(np.linalg.cholesky(a, upper=not lower), value)

    def cho_solve(c_and_lower: Any, b: Any, overwrite_b: bool = False, check_finite: bool = True) -> Any:
        c, lower = c_and_lower
        value = originals["cho_solve"]((P.value(c), lower), P.value(b))
        t = triangle(c, lower)
        first, second = (t, np.swapaxes(t, -1, -2)) if lower else (np.swapaxes(t, -1, -2), t)
        return _keep_value(np.linalg.solve(second, np.linalg.solve(first, b)), value)

    def general(name: str, assume_a: Any) -> None:
        if assume_a not in (None, "gen", "general"):
            raise refuse(name, f"..., assume_a={assume_a!r}; only general matrices are supported")

    def inv(a: Any, overwrite_a: bool = False, check_finite: bool = True, *, assume_a: Any = None,
            lower: bool = False) -> Any:
        general("inv", assume_a)
        return _keep_value(np.linalg.inv(a), originals["inv"](P.value(a)))

    def det(a: Any, overwrite_a: bool = False, check_finite: bool = True) -> Any:
        return _keep_value(np.linalg.det(a), originals["det"](P.value(a)))

    def solve(a: Any, b: Any, lower: bool = False, overwrite_a: bool = False, overwrite_b: bool = False,
              check_finite: bool = True, assume_a: Any = None, transposed: bool = False) -> Any:
        general("solve", assume_a)
        value = originals["solve"](P.value(a), P.value(b), transposed=transposed)
        return _keep_value(np.linalg.solve(np.swapaxes(a, -1, -2) if transposed else a, b), value)

    def aligned(y: Any, value: np.ndarray, sign: np.ndarray, name: str) -> Any:
        """y (NumPy's factor, differentiated) times the constant signs that make it SciPy's:
        the two libraries' LAPACK drivers may choose opposite signs for a singular or eigen
        vector, and the derivative must be that of the vector SciPy returned."""
        y = y * sign
        if not np.allclose(P.value(y), value, rtol=1e-5, atol=1e-6 * max(1.0, float(np.max(np.abs(value), initial=0)))):
            raise NotImplementedError(f"scipy.linalg.{name}: SciPy's factor differs from NumPy's beyond a "
                                      "sign (repeated values?); its derivative is not defined here")
        return _keep_value(y, value)

    def column_signs(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        s = np.sign(np.sum(mine * theirs, axis=-2, keepdims=True))
        return np.where(s == 0, 1.0, s)

    def eigh(a: Any, b: Any = None, *, lower: bool = True, eigvals_only: bool = False, **kwargs: Any) -> Any:
        extra = {k: v for k, v in kwargs.items() if k not in ("overwrite_a", "overwrite_b", "check_finite")
                 and v not in (None, 1)}
        if b is not None or extra:
            raise refuse("eigh", "..., b= or subsets/drivers; the standard problem only")
        w, v = np.linalg.eigh(a, UPLO="L" if lower else "U")
        if eigvals_only:
            return _keep_value(w, originals["eigh"](P.value(a), lower=lower, eigvals_only=True))
        w0, v0 = originals["eigh"](P.value(a), lower=lower)
        return _keep_value(w, w0), aligned(v, v0, column_signs(P.value(v), v0), "eigh")

    def svd(a: Any, full_matrices: bool = True, compute_uv: bool = True, overwrite_a: bool = False,
            check_finite: bool = True, lapack_driver: str = "gesdd") -> Any:
        value = originals["svd"](P.value(a), full_matrices=full_matrices, compute_uv=compute_uv,
                                 lapack_driver=lapack_driver)
        out = np.linalg.svd(a, full_matrices=full_matrices, compute_uv=compute_uv)
        if not compute_uv:
            return _keep_value(out, value)
        u, sv, vt = out
        sign = column_signs(P.value(u), value[0])
        k = np.shape(P.value(sv))[-1]
        row = np.swapaxes(sign[..., :k], -1, -2) if np.shape(P.value(vt))[-2] == k else np.swapaxes(sign, -1, -2)
        return (aligned(u, value[0], sign, "svd"), _keep_value(sv, value[1]), aligned(vt, value[2], row, "svd"))

    def qr(a: Any, overwrite_a: bool = False, lwork: Any = None, mode: str = "full", pivoting: bool = False,
           check_finite: bool = True) -> Any:
        if pivoting or mode not in ("full", "economic", "r"):
            raise refuse("qr", f"..., mode={mode!r}, pivoting={pivoting!r}")
        m, n = np.shape(P.value(a))[-2:]
        value = originals["qr"](P.value(a), mode=mode)
        if mode == "r":
            if m != n:
                raise refuse("qr", "..., mode='r') of a non-square matrix (SciPy's R is the complete one)")
            r = np.linalg.qr(a, mode="r")
            sign = np.sign(np.diagonal(P.value(r)) * np.diagonal(value[0]))[:, None]
            return (aligned(r, value[0], np.where(sign == 0, 1.0, sign), "qr"),)
        # 'full' of a tall matrix is numpy's 'complete', which is refused (not unique)
        q, r = np.linalg.qr(a, mode="reduced" if mode == "economic" or m == n else "complete")
        sign = column_signs(P.value(q), value[0])
        return aligned(q, value[0], sign, "qr"), aligned(r, value[1], np.swapaxes(sign, -1, -2), "qr")

    def expm(A: Any) -> Any:
        av = np.asarray(P.value(A), dtype=np.float64)
        value = originals["expm"](av)
        if av.ndim != 2 or av.shape[0] != av.shape[1]:
            raise refuse("expm", "of anything but one square matrix")
        # Frechet derivative by scaling and squaring: Taylor series of exp(A / 2^s) and of its
        # derivative, both linear recursions in the tangent with constant powers of A
        norm = np.max(np.sum(np.abs(av), axis=0)) if av.size else 0.0
        squarings = max(0, int(np.ceil(np.log2(norm / 0.25)))) if norm > 0.25 else 0

        def jvp_of(primals: Any, _: Any) -> Any:
            # the powers from the input as given (reverse order 2 records them); the number of
            # squarings is a constant, chosen from the primal
            b = primals[0] / 2.0 ** squarings
            powers = [np.eye(av.shape[0])]
            for _k in range(18):
                powers.append(powers[-1] @ b)
            x = sum(p / float(np.prod(np.arange(1, k + 1))) for k, p in enumerate(powers))
            squares = [x]
            for _k in range(squarings):
                squares.append(squares[-1] @ squares[-1])

            def jvp(da: Any) -> Any:
                e = da / 2.0 ** squarings
                d, total, fact = e, e, 1.0
                for k in range(2, len(powers)):
                    fact *= k
                    d = b @ d + e @ powers[k - 1]
                    total = total + d / fact
                for i in range(squarings):
                    total = squares[i] @ total + total @ squares[i]
                return total
            return jvp

        return P.linearized(np.asarray(value, dtype=av.dtype), [A], jvp_of, "scipy.linalg.expm")

    def sqrtm(A: Any, **kwargs: Any) -> Any:
        av = np.asarray(P.value(A))
        value = np.asarray(originals["sqrtm"](av))
        if value.dtype.kind == "c":
            raise NotImplementedError("scipy.linalg.sqrtm of a matrix whose square root is complex: "
                                      "complex results are out of scope")
        n = av.shape[-1]
        eye = np.eye(n)

        def jvp_of(primals: Any, x: Any) -> Any:
            # X dX + dX X = dA: a linear map on vec(dA), from the square root X
            solver = np.linalg.inv(np.kron(eye, x) + np.kron(np.swapaxes(x, -1, -2), eye))

            def jvp(da: Any) -> Any:
                flat = np.reshape(np.swapaxes(da, -1, -2), (n * n,))
                return np.swapaxes(np.reshape(solver @ flat, (n, n)), -1, -2)
            return jvp

        return P.linearized(value.astype(av.dtype, copy=False), [A], jvp_of, "scipy.linalg.sqrtm")

    def solve_sylvester(a: Any, b: Any, q: Any) -> Any:
        av, bv, qv = (np.asarray(P.value(m), dtype=np.float64) for m in (a, b, q))
        value = np.asarray(originals["solve_sylvester"](av, bv, qv))
        if value.dtype.kind == "c":
            raise NotImplementedError("scipy.linalg.solve_sylvester with a complex solution: complex "
                                      "results are out of scope")
        m, n = value.shape

        def jvp_of(primals: Any, x: Any) -> Any:
            a_, b_ = primals[0], primals[1]
            # A dX + dX B = dQ - dA X - X dB: the Sylvester operator, vectorised column-major,
            # is the matrix I (x) A + B^T (x) I
            solver = np.linalg.inv(np.kron(np.eye(n), a_) + np.kron(np.swapaxes(b_, -1, -2), np.eye(m)))

            def jvp(da: Any, db: Any, dq: Any) -> Any:
                rhs = dq - da @ x - x @ db
                flat = np.reshape(np.swapaxes(rhs, -1, -2), (m * n,))
                return np.swapaxes(np.reshape(solver @ flat, (n, m)), -1, -2)
            return jvp

        return P.linearized(value, [a, b, q], jvp_of, "scipy.linalg.solve_sylvester")

    def cho_factor(a: Any, lower: bool = False, overwrite_a: bool = False, check_finite: bool = True) -> Any:
        value, lower = originals["cho_factor"](P.value(a), lower=lower)
        # the unused triangle holds what LAPACK left there (no derivative: cho_solve never reads it)
        return _keep_value(np.linalg.cholesky(a, upper=not lower), value), lower

    def rows_of(piv: np.ndarray) -> np.ndarray:
        """The row order LAPACK's interchanges (row i with piv[i], in order) give: A[rows] = L U."""
        rows = np.arange(len(piv))
        for i, p in enumerate(piv):
            rows[[i, p]] = rows[[p, i]]
        return rows

    def lu_factor(a: Any, overwrite_a: bool = False, check_finite: bool = True) -> Any:
        av = np.asarray(P.value(a))
        if av.ndim != 2 or av.shape[0] != av.shape[1]:
            raise refuse("lu_factor", "a non-square matrix")
        lu, piv = originals["lu_factor"](av)
        perm = rows_of(piv)
        eye = np.eye(av.shape[0], dtype=lu.dtype)

        def jvp_of(primals: Any, lu_out: Any) -> Any:
            # A[perm] = L U: with X = L^-1 dA[perm] U^-1, dL = L tril(X, -1) and dU = triu(X) U
            low = np.tril(lu_out, -1) + eye
            up = np.triu(lu_out)
            linv, uinv = np.linalg.inv(low), np.linalg.inv(up)

            def jvp(da: Any) -> Any:
                x = linv @ da[perm] @ uinv
                return low @ np.tril(x, -1) + np.triu(x) @ up
            return jvp

        return P.linearized(lu, [a], jvp_of, "scipy.linalg.lu_factor"), piv

    def lu_solve(lu_and_piv: Any, b: Any, trans: int = 0, overwrite_b: bool = False, check_finite: bool = True) -> Any:
        lu, piv = lu_and_piv
        value = originals["lu_solve"]((P.value(lu), piv), P.value(b), trans=trans)
        if trans not in (0, 1):
            raise refuse("lu_solve", f"..., trans={trans!r}")
        n = np.shape(P.value(lu))[0]
        perm = rows_of(piv)
        # A[perm] = L U, so A is L U with its rows put back
        a = ((np.tril(lu, -1) + np.eye(n)) @ np.triu(lu))[np.argsort(perm)]
        return _keep_value(np.linalg.solve(np.swapaxes(a, -1, -2) if trans else a, b), value)

    def norm(a: Any, ord: Any = None, axis: Any = None, keepdims: bool = False, check_finite: bool = True) -> Any:
        value = originals["norm"](P.value(a), ord=ord, axis=axis, keepdims=keepdims)
        return _keep_value(np.linalg.norm(a, ord=ord, axis=axis, keepdims=keepdims), value)

    return {"solve_sylvester": solve_sylvester, "cho_factor": cho_factor, "lu_factor": lu_factor,
            "lu_solve": lu_solve, "norm": norm,
            "solve_triangular": solve_triangular, "cholesky": cholesky, "cho_solve": cho_solve,
            "inv": inv, "det": det, "solve": solve, "eigh": eigh, "svd": svd, "qr": qr, "expm": expm,
            "sqrtm": sqrtm}


def _nd_convolve(in1: Any, in2: Any, mode: str) -> Any:
    """The N-d convolution of SciPy's 'full'/'same'/'valid' modes: one shifted copy of in1 per
    element of in2."""
    s1, s2 = np.shape(P.value(in1)), np.shape(P.value(in2))
    if len(s1) != len(s2):
        raise ValueError("in1 and in2 should have the same dimensionality")
    full = None
    for j in np.ndindex(*s2):
        shifted = np.pad(in1, [(jd, sd - 1 - jd) for jd, sd in zip(j, s2)]) * in2[j]
        full = shifted if full is None else full + shifted
    if mode == "full":
        return full
    if mode == "same":
        starts = [(f - a) // 2 for f, a in zip(np.shape(P.value(full)), s1)]
        return full[tuple(slice(st, st + a) for st, a in zip(starts, s1))]
    if mode == "valid":
        if all(a >= b for a, b in zip(s1, s2)):
            return full[tuple(slice(b - 1, a) for a, b in zip(s1, s2))]
        if all(b >= a for a, b in zip(s1, s2)):
            return full[tuple(slice(a - 1, b) for a, b in zip(s1, s2))]
        raise ValueError("For 'valid' mode, one must be at least as large as the other in every dimension")
    raise ValueError("acceptable mode flags are 'valid', 'same', or 'full'")


def _signal_rules(ss: Any) -> dict[str, Callable[..., Any]]:
    originals = {name: _original(getattr(ss, name)) for name in ("convolve", "correlate", "convolve2d")}

    def convolve(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> Any:
        return _keep_value(_nd_convolve(in1, in2, mode), originals["convolve"](P.value(in1), P.value(in2), mode))

    def correlate(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> Any:
        flipped = np.flip(in2) if P.is_active(in2) else np.flip(np.asarray(in2))
        return _keep_value(_nd_convolve(in1, flipped, mode),
                           originals["correlate"](P.value(in1), P.value(in2), mode))

    def convolve2d(in1: Any, in2: Any, mode: str = "full", boundary: str = "fill", fillvalue: Any = 0) -> Any:
        if boundary != "fill" or fillvalue != 0:
            raise NotImplementedError("scipy.signal.convolve2d(..., boundary=/fillvalue=) other than "
                                      "zero fill is not supported by gradtest's AD engines")
        return _keep_value(_nd_convolve(in1, in2, mode), originals["convolve2d"](P.value(in1), P.value(in2), mode))

    return {"convolve": convolve, "correlate": correlate, "convolve2d": convolve2d}


def _install_module_functions(module: Any, label: str, rules: dict[str, Callable[..., Any]]) -> None:
    for name, rule in rules.items():
        original = _original(getattr(module, name))
        register(original, kink=_MODULE_KINKS.get(f"{label}.{name}", ""))(rule)
        setattr(module, name, _dispatcher(original, rule))


def _install_linalg() -> None:
    import scipy.linalg as sl
    _install_module_functions(sl, "scipy.linalg", _linalg_rules(sl))


def _install_signal() -> None:
    import scipy.signal as ss

    from . import _rules_signal
    rules = _signal_rules(ss)
    rules.update(_rules_signal.signal_rules(ss, _original, rules["convolve"]))
    _install_module_functions(ss, "scipy.signal", rules)


def _install_ndimage() -> None:
    import scipy.ndimage as nd

    from . import _rules_signal
    _install_module_functions(nd, "scipy.ndimage", _rules_signal.ndimage_rules(nd, _original))


def _install_interpolate() -> None:
    import scipy.interpolate as si

    from . import _rules_interpolate
    _install_module_functions(si, "scipy.interpolate", _rules_interpolate.install(si, _original))


def _install_fft() -> None:
    import scipy.fft as sf

    from . import _rules_signal
    _install_module_functions(sf, "scipy.fft", _rules_signal.fft_rules(sf, _original))


# ---- installation ----------------------------------------------------------------------------

def _install_spatial() -> None:
    import scipy.spatial.distance as sd

    from . import _rules_spatial
    _install_module_functions(sd, "scipy.spatial.distance", _rules_spatial.rules(sd))


_INSTALLERS = {"scipy.special": _install_special, "scipy.stats": _install_stats,
               "scipy.linalg": _install_linalg, "scipy.signal": _install_signal,
               "scipy.spatial.distance": _install_spatial, "scipy.ndimage": _install_ndimage,
               "scipy.fft": _install_fft, "scipy.interpolate": _install_interpolate}


def install(module: str) -> None:
    """Installs the rules of one SciPy module ("scipy.special" or "scipy.stats"), once."""
    with _LOCK:
        if module in _DONE:
            return
        _DONE.add(module)
        if module != "scipy.special" and "scipy.special" not in _DONE:
            # the other modules' rules are written with scipy.special's
            _DONE.add("scipy.special")
            _install_special()
        _INSTALLERS[module]()


_PENDING: list[str] = []


def _initializing(name: str) -> bool:
    """True while module ``name`` is being imported (its code has not finished running)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _install_quietly(name: str) -> None:
    try:
        install(name)
    except Exception as err:  # never break the program's own import of SciPy
        warnings.warn(f"gradtest could not install its {name} rules: {err!r}", RuntimeWarning,
                      stacklevel=3)


class _PostImportHook:
    """Installs the rules of a SciPy module right after the program imports it (a meta path
    finder: it only wraps the loader the normal path finder returns)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _INSTALLERS or name in _DONE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            if name != "scipy.special" and _initializing("scipy.special"):
                # SciPy 1.18's scipy.special imports scipy.linalg while it initializes: the
                # rules, written with scipy.special's functions, wait for it to finish
                _PENDING.append(name)
            else:
                for done in [name, *_PENDING]:
                    _install_quietly(done)
                _PENDING.clear()
            if _DONE.issuperset(_INSTALLERS) and self in sys.meta_path:
                sys.meta_path.remove(self)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


for _name in _INSTALLERS:
    if _name in sys.modules:
        install(_name)
if not _DONE.issuperset(_INSTALLERS):
    sys.meta_path.insert(0, _PostImportHook())
