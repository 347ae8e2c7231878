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
import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _primitives as P
from ._rules import KINKS, register, register_ufunc

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
}
_SPECIAL_KINKS = {
    "logsumexp": "the maximum shift is a constant; b and return_sign supported", "softmax": "",
    "log_softmax": "", "polygamma": "the order n is a constant", "spherical_jn": "the order n is a constant",
    "multigammaln": "the dimension d is a constant",
}
_STATS_KINKS = {
    **{f"norm.{m}": "x, loc and scale differentiated" for m in ("logpdf", "pdf", "cdf", "logcdf")},
    **{f"{d}.{m}": "x, shapes, loc and scale in logpdf/pdf; cdf/logcdf in x, loc and scale only"
       for d in ("t", "gamma", "beta", "chi2", "expon", "logistic", "laplace", "cauchy")
       for m in ("logpdf", "pdf", "cdf", "logcdf")},
    **{f"poisson.{m}": "in mu (k is a constant)" for m in ("logpmf", "pmf", "cdf")},
    "dirichlet.logpdf": "x and alpha differentiated", "dirichlet.pdf": "x and alpha differentiated",
    **{f"multivariate_normal.{m}": "x, mean and cov differentiated; cov: its lower triangle is read "
       "(as SciPy's eigh does)" for m in ("logpdf", "pdf")},
}
KINKS.update({f"scipy.special.{n}": k for n, k in {**UFUNC_KINKS, **_SPECIAL_KINKS}.items()})
KINKS.update({f"scipy.stats.{n}": k for n, k in _STATS_KINKS.items()})


# ---- ufuncs ----------------------------------------------------------------------------------


def _no_derivative(name: str, what: str) -> NotImplementedError:
    return NotImplementedError(f"scipy.special.{name}: no derivative in {what} (it is held to be a "
                               "constant; pass a plain array or number for it)")


def _pointwise_call(value: np.ndarray, inputs: Sequence[Any], partials: Sequence[Any], name: str) -> Any:
    """P.pointwise, with a 0-d result computed as one element and reshaped back (the reverse
    engine's pointwise gives a 0-d value the shape (1,))."""
    if value.ndim:
        return P.pointwise(value, list(inputs), list(partials), name)
    one = [np.reshape(x, (1,)) if P.is_active(x) and np.ndim(P.value(x)) == 0 else x for x in inputs]
    parts = [None if p is None else np.reshape(p, (1,)) for p in partials]
    return np.reshape(P.pointwise(np.reshape(value, (1,)), one, parts, name), ())


def _pointwise(ufunc: np.ufunc, inputs: Sequence[Any], partials: Callable[..., Sequence[Any]],
               constant_args: Sequence[int] = (), kwargs: dict[str, Any] | None = None) -> Any:
    """``ufunc(*inputs)`` with the partials ``partials(*primal inputs)``; the inputs at
    ``constant_args`` must not carry a derivative."""
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
    return _pointwise_call(y, list(inputs), parts, f"scipy.special.{name}")


def _unary(name: str, derivative: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    import scipy.special as sc
    ufunc = getattr(sc, name)

    def rule(x: Any, **kwargs: Any) -> Any:
        return _pointwise(ufunc, [x], lambda v: [derivative(v, ufunc(v))], kwargs=kwargs)

    register_ufunc(ufunc, kink=UFUNC_KINKS[name])(rule)


def _binary(name: str, partials: Callable[..., Sequence[Any]], constant_args: Sequence[int] = ()) -> None:
    import scipy.special as sc
    ufunc = getattr(sc, name)

    def rule(a: Any, b: Any, **kwargs: Any) -> Any:
        return _pointwise(ufunc, [a, b], partials, constant_args, kwargs)

    register_ufunc(ufunc, kink=UFUNC_KINKS[name])(rule)


def _install_ufuncs() -> None:
    import scipy.special as sc

    sqrt_pi = float(np.sqrt(np.pi))
    _unary("gammaln", lambda x, y: sc.digamma(x))
    _unary("psi", lambda x, y: sc.polygamma(1, x))  # digamma is the same ufunc object
    _unary("gamma", lambda x, y: y * sc.digamma(x))
    _unary("loggamma", lambda x, y: sc.digamma(x))
    _unary("erf", lambda x, y: (2.0 / sqrt_pi) * np.exp(-x * x))
    _unary("erfc", lambda x, y: (-2.0 / sqrt_pi) * np.exp(-x * x))
    _unary("erfinv", lambda x, y: (sqrt_pi / 2.0) * np.exp(y * y))
    _unary("erfcinv", lambda x, y: (-sqrt_pi / 2.0) * np.exp(y * y))
    _unary("expit", lambda x, y: y * (1.0 - y))
    _unary("logit", lambda x, y: 1.0 / (x * (1.0 - x)))
    _unary("ndtr", lambda x, y: np.exp(-0.5 * x * x) / _SQRT_2PI)
    _unary("log_ndtr", lambda x, y: np.exp(-0.5 * x * x - y) / _SQRT_2PI)
    _unary("ndtri", lambda p, y: _SQRT_2PI * np.exp(0.5 * y * y))
    _unary("i0", lambda x, y: sc.i1(x))
    _unary("i1", lambda x, y: 0.5 * (sc.i0(x) + sc.iv(2, x)))
    _unary("i0e", lambda x, y: sc.i1e(x) - np.sign(x) * y)
    _unary("i1e", lambda x, y: 0.5 * (sc.i0e(x) + sc.ive(2, x)) - np.sign(x) * y)
    _unary("entr", lambda x, y: -(np.log(x) + 1.0))
    _unary("j0", lambda x, y: -sc.j1(x))
    _unary("j1", lambda x, y: 0.5 * (sc.j0(x) - sc.jv(2, x)))
    _unary("y0", lambda x, y: -sc.y1(x))
    _unary("y1", lambda x, y: 0.5 * (sc.y0(x) - sc.yv(2, x)))
    _unary("rgamma", lambda x, y: -y * sc.digamma(x))
    _unary("log_expit", lambda x, y: sc.expit(-x))
    _unary("erfcx", lambda x, y: 2.0 * x * y - 2.0 / sqrt_pi)

    def beta_partials(a: Any, b: Any) -> list[Any]:
        y = sc.beta(a, b)
        dab = sc.digamma(a + b)
        return [y * (sc.digamma(a) - dab), y * (sc.digamma(b) - dab)]

    _binary("beta", beta_partials)
    _binary("betaln", lambda a, b: [sc.digamma(a) - sc.digamma(a + b), sc.digamma(b) - sc.digamma(a + b)])
    _binary("xlogy", lambda x, y: [np.log(y), np.where(x == 0, 0.0, x / y)])
    _binary("xlog1py", lambda x, y: [np.log1p(y), np.where(x == 0, 0.0, x / (1.0 + y))])
    _binary("rel_entr", lambda x, y: [np.log(x / y) + 1.0, -x / y])
    _binary("kl_div", lambda x, y: [np.log(x / y), 1.0 - x / y])
    # Bessel functions: derivative in x only; the order v is a constant
    _binary("iv", lambda v, x: [None, 0.5 * (sc.iv(v - 1, x) + sc.iv(v + 1, x))], (0,))
    _binary("ive", lambda v, x: [None, 0.5 * (sc.ive(v - 1, x) + sc.ive(v + 1, x)) - np.sign(x) * sc.ive(v, x)],
            (0,))
    _binary("jv", lambda v, x: [None, 0.5 * (sc.jv(v - 1, x) - sc.jv(v + 1, x))], (0,))
    _binary("yv", lambda v, x: [None, 0.5 * (sc.yv(v - 1, x) - sc.yv(v + 1, x))], (0,))
    _binary("yn", lambda n, x: [None, 0.5 * (sc.yn(n - 1, x) - sc.yn(n + 1, x))], (0,))
    # incomplete gamma and beta functions, regularised: in x, the integrand; shapes are constants
    _binary("gammainc", lambda a, x: [None, np.exp((a - 1.0) * np.log(x) - x - sc.gammaln(a))], (0,))
    _binary("gammaincc", lambda a, x: [None, -np.exp((a - 1.0) * np.log(x) - x - sc.gammaln(a))], (0,))
    _binary("stdtr", lambda df, t: [None, np.exp(_t_logpdf(sc, t, df))], (0,))
    _binary("pdtr", lambda k, m: [None, -np.exp(sc.xlogy(k, m) - m - sc.gammaln(k + 1.0))], (0,))
    _binary("pdtrc", lambda k, m: [None, np.exp(sc.xlogy(k, m) - m - sc.gammaln(k + 1.0))], (0,))
    _ternary_betainc(sc)
    _binary("kv", lambda v, x: [None, -0.5 * (sc.kv(v - 1, x) + sc.kv(v + 1, x))], (0,))
    _binary("kve", lambda v, x: [None, -0.5 * (sc.kve(v - 1, x) + sc.kve(v + 1, x)) + np.sign(x) * sc.kve(v, x)],
            (0,))


def _t_logpdf(sc: Any, t: Any, df: Any) -> Any:
    """log of Student's t density (plain arrays)."""
    return (sc.gammaln((df + 1.0) / 2.0) - sc.gammaln(df / 2.0) - 0.5 * np.log(df * np.pi)
            - (df + 1.0) / 2.0 * np.log1p(t * t / df))


def _ternary_betainc(sc: Any) -> None:
    ufunc = sc.betainc

    def partials(a: Any, b: Any, x: Any) -> list[Any]:
        return [None, None, np.exp(sc.xlogy(a - 1.0, x) + sc.xlog1py(b - 1.0, -x) - sc.betaln(a, b))]

    def rule(a: Any, b: Any, x: Any, **kwargs: Any) -> Any:
        return _pointwise(ufunc, [a, b, x], partials, (0, 1), kwargs)

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
        value = polygamma_0(n, xv)
        return _pointwise_call(np.asarray(value, dtype=P.float_dtype(xv)), [x],
                           [np.asarray(polygamma_0(n + 1, xv), dtype=P.float_dtype(xv))],
                           "scipy.special.polygamma")

    def spherical_jn(n: Any, z: Any, derivative: bool = False) -> Any:
        if P.is_active(n):
            raise _no_derivative("spherical_jn", "the order n")
        if derivative:
            raise NotImplementedError("scipy.special.spherical_jn(..., derivative=True) is not "
                                      "supported by gradtest's AD engines")
        zv = P.value(z)
        dt = P.float_dtype(zv)
        return _pointwise_call(np.asarray(spherical_jn_0(n, zv), dtype=dt), [z],
                           [np.asarray(spherical_jn_0(n, zv, derivative=True), dtype=dt)],
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
    originals = {name: _original(getattr(norm, name)) for name in ("logpdf", "pdf", "cdf", "logcdf")}

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

    return {"logpdf": logpdf, "pdf": pdf, "cdf": cdf, "logcdf": logcdf}


def _location_scale_rules(dist: Any, logpdf_std: Callable[..., Any], cdf_std: Callable[..., Any],
                          nshapes: int) -> dict[str, Callable[..., Any]]:
    """logpdf/pdf/cdf/logcdf of a location-scale family from its standard log density and
    distribution function; the arguments parse as SciPy's do: x, the shapes, loc, scale."""
    originals = {name: _original(getattr(dist, name)) for name in ("logpdf", "pdf", "cdf", "logcdf")}

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

    return {"logpdf": logpdf, "pdf": pdf, "cdf": cdf, "logcdf": logcdf}


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
    originals = {name: _original(getattr(mvn, name)) for name in ("logpdf", "pdf")}

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

    return {"logpdf": logpdf, "pdf": pdf}


def _install_stats() -> None:
    import scipy.stats as st
    for label, dist, rules in [("norm", st.norm, _norm_rules(st.norm)),
                               ("multivariate_normal", st.multivariate_normal,
                                _mvn_rules(st.multivariate_normal)),
                               ("poisson", st.poisson, _poisson_rules(st.poisson)),
                               ("dirichlet", st.dirichlet, _dirichlet_rules(st.dirichlet))] + _family_rules(st):
        for name, rule in rules.items():
            original = _original(getattr(dist, name))
            # the distribution objects are shared (``from scipy.stats import norm``): an
            # instance attribute reaches every user of them
            setattr(dist, name, _dispatcher(original, rule))


# ---- installation ----------------------------------------------------------------------------

_INSTALLERS = {"scipy.special": _install_special, "scipy.stats": _install_stats}


def install(module: str) -> None:
    """Installs the rules of one SciPy module ("scipy.special" or "scipy.stats"), once."""
    with _LOCK:
        if module in _DONE:
            return
        _DONE.add(module)
        if module == "scipy.stats":
            install_special = "scipy.special" not in _DONE
            if install_special:
                _DONE.add("scipy.special")
                _install_special()
        _INSTALLERS[module]()


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Installs the rules of a SciPy module right after the program imports it."""

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
            try:
                install(name)
            except Exception as err:  # never break the program's own import of SciPy
                warnings.warn(f"gradtest could not install its {name} rules: {err!r}", RuntimeWarning,
                              stacklevel=2)
            if _DONE.issuperset(_INSTALLERS) and self in sys.meta_path:
                sys.meta_path.remove(self)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


for _name in _INSTALLERS:
    if _name in sys.modules:
        install(_name)
if not _DONE.issuperset(_INSTALLERS):
    sys.meta_path.insert(0, _PostImportHook())
