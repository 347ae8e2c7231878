"""Verdicts on code gradtest's authors did not write: SciPy's and NumPy's own functions, called
the way users call them, checked by both engines against the finite-difference ground truth.

Each case must pass in both engines (a failure here is a false alarm or an engine bug), and the
cases at the end must give a clear error naming what is unsupported, never a raw traceback or a
silent zero.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.integrate as si
import scipy.linalg as sl
import scipy.optimize as so
import scipy.signal as ss
import scipy.spatial.distance as sd
import scipy.special as sc
import scipy.stats as st

import gradtest

RNG = np.random.default_rng(1)


def normal(*shape):
    return RNG.normal(size=shape)


def positive(*shape):
    return RNG.uniform(0.5, 2.0, size=shape)


A = RNG.normal(size=(4, 4))
SPD = A @ A.T + 4 * np.eye(4)

CASES = {
    # scipy.optimize's test functions
    "optimize.rosen": (so.rosen, (normal(6),)),
    "optimize.rosen_der": (lambda x: np.sum(so.rosen_der(x) * np.arange(6.0)), (normal(6),)),
    # scipy.stats and scipy.special
    "stats.norm.logpdf": (lambda x: st.norm.logpdf(x, loc=0.3, scale=2.0).sum(), (normal(5),)),
    "stats.t.logpdf": (lambda x: st.t.logpdf(x, 3.0).sum(), (normal(5),)),
    "stats.t.logpdf(df)": (lambda d: st.t.logpdf(0.5, d).sum(), (positive(3) + 1,)),
    "stats.gamma.logpdf": (lambda x: st.gamma.logpdf(x, 2.0).sum(), (positive(5),)),
    "stats.gamma.logpdf(a)": (lambda a: st.gamma.logpdf(np.array([1.0, 2.0]), a).sum(), (positive(2),)),
    "stats.beta.logpdf": (lambda x: st.beta.logpdf(x, 2.0, 3.0).sum(), (RNG.uniform(0.2, 0.8, 5),)),
    "stats.expon.logpdf(scale)": (lambda s: st.expon.logpdf(np.array([1.0, 2.0]), scale=s).sum(), (positive(2),)),
    "stats.laplace.logpdf": (lambda x: st.laplace.logpdf(x, 0.1).sum(), (normal(5),)),
    "stats.cauchy.logpdf": (lambda x: st.cauchy.logpdf(x).sum(), (normal(5),)),
    "stats.logistic.logcdf": (lambda x: st.logistic.logcdf(x).sum(), (normal(5),)),
    "stats.norm.cdf": (lambda x: st.norm.cdf(x).sum(), (normal(5),)),
    "stats.norm.logsf": (lambda x: st.norm.logsf(x).sum(), (normal(5),)),
    "stats.multivariate_normal.logpdf(cov)": (
        lambda c: st.multivariate_normal.logpdf(np.ones(4), np.zeros(4), c @ c.T + np.eye(4)), (A * 0.3,)),
    "special.logsumexp(b)": (lambda x: sc.logsumexp(x, b=np.arange(1.0, 6.0)), (normal(5),)),
    "special.logsumexp(return_sign)": (
        lambda x: sc.logsumexp(x, b=np.array([1.0, -0.2, 1.0]), return_sign=True)[0], (normal(3),)),
    "special.softmax": (lambda x: (sc.softmax(x, axis=0) ** 2).sum(), (normal(4, 3),)),
    "special.log_softmax": (lambda x: sc.log_softmax(x, axis=1)[:, 0].sum(), (normal(3, 4),)),
    "special.xlogy": (lambda x: sc.xlogy(x, x + 2).sum(), (positive(3),)),
    "special.gammaln": (lambda x: sc.gammaln(x).sum(), (positive(3),)),
    "special.multigammaln": (lambda x: sc.multigammaln(x[0] + 3, 2), (positive(1),)),
    "special.spence": (lambda x: sc.spence(x).sum(), (positive(3),)),
    "special.ellipk/ellipe": (lambda m: (sc.ellipk(m) * sc.ellipe(m)).sum(), (RNG.uniform(0.1, 0.9, 3),)),
    "special.boxcox": (lambda x, lm: sc.boxcox(x, lm).sum(), (positive(3), RNG.uniform(-0.5, 0.5, 3))),
    "special.huber": (lambda r: sc.huber(1.0, r).sum(), (normal(5) * 2,)),
    "special.pseudo_huber": (lambda r: sc.pseudo_huber(0.7, r).sum(), (normal(5) * 2,)),
    "stats.lognorm.logpdf": (lambda x: st.lognorm.logpdf(x, 0.5).sum(), (positive(5),)),
    "stats.weibull_min.logpdf(c)": (lambda c: st.weibull_min.logpdf(np.array([0.5, 1.5]), c).sum(), (positive(2),)),
    "stats.gumbel_r.cdf": (lambda x: st.gumbel_r.cdf(x, 0.2, 1.5).sum(), (normal(4),)),
    "stats.invgamma.logpdf(a)": (lambda a: st.invgamma.logpdf(np.array([0.5, 1.5]), a).sum(), (positive(2),)),
    "stats.binom.logpmf(p)": (lambda p: st.binom.logpmf([3, 1, 0, 10], 10, p).sum(), (RNG.uniform(0.2, 0.8, 4),)),
    "special.logit(expit)": (lambda x: sc.logit(sc.expit(x)).sum(), (normal(3),)),
    # scipy.linalg, scipy.integrate, scipy.signal, scipy.spatial
    "linalg.expm": (lambda a: sl.expm(a).sum(), (normal(3, 3) * 0.3,)),
    "linalg.solve_triangular": (lambda b: sl.solve_triangular(np.triu(SPD), b).sum(), (normal(4),)),
    "linalg.det": (lambda a: sl.det(a), (A,)),
    "linalg.lu_factor/lu_solve": (lambda a: sl.lu_solve(sl.lu_factor(a), np.arange(1.0, 5.0)).sum(), (A,)),
    "linalg.lu_solve(trans=1)": (lambda b: (sl.lu_solve(sl.lu_factor(A), b, trans=1) ** 2).sum(), (normal(4),)),
    "linalg.cho_factor/cho_solve": (lambda a: sl.cho_solve(sl.cho_factor(a @ a.T + 4 * np.eye(4)), np.ones(4)).sum(), (A,)),
    "linalg.norm": (lambda a: sl.norm(a) + sl.norm(a, 1), (A,)),
    "linalg.eigh(eigvals_only)": (lambda a: sl.eigh(a + a.T, eigvals_only=True).sum(), (A,)),
    "integrate.trapezoid": (lambda y: si.trapezoid(y, dx=0.5), (normal(6),)),
    "integrate.simpson": (lambda y: si.simpson(y, dx=0.5), (normal(7),)),
    "signal.convolve": (lambda a: ss.convolve(a, np.ones(3)).sum() ** 2, (normal(5),)),
    "distance.cdist": (lambda a: sd.cdist(a, a + 1).sum(), (normal(3, 2),)),
    "distance.cdist(sqeuclidean)": (lambda a: sd.cdist(a, a[::-1] * 2, "sqeuclidean").sum(), (normal(3, 2),)),
    "distance.cdist(cosine)": (lambda a: sd.cdist(a, a + 1, metric="cosine").sum(), (normal(3, 2),)),
    "distance.cdist(minkowski)": (lambda a: sd.cdist(a, a * 0.5 + 1, "minkowski", p=3).sum(), (normal(3, 2),)),
    "distance.pdist": (lambda a: sd.pdist(a).sum(), (normal(4, 2),)),
    "distance.pdist(correlation)": (lambda a: sd.pdist(a, "correlation").sum(), (normal(4, 3),)),
    "distance.squareform(pdist)": (lambda a: (sd.squareform(sd.pdist(a)) ** 2 * np.arange(16.0).reshape(4, 4)).sum(),
                                   (normal(4, 2),)),
    "distance.euclidean": (lambda a: sd.euclidean(a, np.ones(3)), (normal(3),)),
    "distance.cityblock": (lambda a: sd.cityblock(a, np.ones(3)), (normal(3),)),
    "rbf kernel": (lambda a: np.exp(-sd.cdist(a, a, "sqeuclidean") / 2).sum(), (normal(4, 2),)),
    # NumPy
    "interp": (lambda x: np.interp(x, [0.0, 1.0, 2.0], [0.0, 3.0, 1.0]).sum(), (RNG.uniform(0.1, 1.9, 5),)),
    "polyval": (lambda p: np.polyval(p, 1.7), (normal(4),)),
    "polynomial.polyval": (lambda c: np.polynomial.polynomial.polyval(1.5, c), (normal(4),)),
    "trapezoid": (lambda y: np.trapezoid(y, dx=0.1), (normal(7),)),
    "convolve": (lambda y: np.convolve(y, [1.0, 2.0, 3.0]).sum() ** 2, (normal(7),)),
    "sort": (lambda y: (np.sort(y) * np.arange(7)).sum(), (normal(7),)),
    "sort(axis=0)": (lambda a: (np.sort(a, axis=0) * np.arange(6.0).reshape(3, 2)).sum(), (normal(3, 2),)),
    "percentile": (lambda y: np.percentile(y, 30), (normal(7),)),
    "median": (lambda a: np.median(a), (normal(5),)),
    "hypot": (lambda y: np.hypot(y, 2 * y).sum(), (normal(7),)),
    "arctan2": (lambda y: np.arctan2(y, 1 + y ** 2).sum(), (normal(7),)),
    "linalg.lstsq": (lambda a: np.linalg.lstsq(a, np.ones(5), rcond=None)[0].sum(), (normal(5, 3),)),
    "linalg.norm(axis)": (lambda a: np.linalg.norm(a, axis=1).sum(), (normal(3, 2),)),
    "linalg.cond": (lambda a: np.linalg.cond(a), (A,)),
    "linalg.tensorsolve": (lambda a: np.linalg.tensorsolve(a, np.ones(4)).sum(), (A + 4 * np.eye(4),)),
    "logaddexp.reduce": (lambda y: np.logaddexp.reduce(y), (normal(8),)),
    "logaddexp2": (lambda a: np.logaddexp2(a, 1.0).sum(), (normal(3),)),
    "float_power": (lambda a: np.float_power(a, 2.5).sum(), (positive(3),)),
    "cov": (lambda a: np.cov(a).sum(), (normal(3, 5),)),
    "corrcoef": (lambda a: np.corrcoef(a)[0, 1], (normal(3, 5),)),
    "vander": (lambda a: np.vander(a, 3).sum(), (normal(4),)),
    "meshgrid": (lambda a: (lambda X, Y: (X * Y).sum())(*np.meshgrid(a, a)), (normal(3),)),
    "tile": (lambda a: np.tile(a, 3).sum() ** 2, (normal(3),)),
    "tensordot": (lambda a: np.tensordot(a, a, axes=([0], [0])).sum(), (normal(3, 2),)),
    "outer": (lambda a: np.outer(a, a).sum(), (normal(3),)),
    "einsum(optimize)": (lambda a: np.einsum("ij,jk,kl->il", a, a, a, optimize=True).sum(), (normal(3, 3),)),
    "select": (lambda a: np.select([a < 0], [a ** 2], default=a).sum(), (normal(4),)),
    "histogram(weights)": (lambda w: (np.histogram(np.arange(4.0), bins=2, weights=w)[0] ** 2).sum(), (normal(4),)),
    "bincount(weights)": (lambda a: np.bincount([0, 1, 1, 2], weights=a).sum() ** 2, (normal(4),)),
    "add.at": (lambda a: (lambda z: (np.add.at(z, [0, 0, 1], a[:3]), (z ** 2).sum())[1])(np.zeros_like(a)),
               (normal(4),)),
    "ediff1d": (lambda a: np.ediff1d(a).sum() ** 2, (normal(4),)),
    "insert": (lambda a: np.insert(a, 1, 5.0).sum() ** 2, (normal(4),)),
    "delete": (lambda a: np.delete(a, 1).sum() ** 2, (normal(4),)),
    "append": (lambda a: np.append(a, a[0]).sum() ** 2, (normal(4),)),
    "resize": (lambda a: np.resize(a, 6).sum() ** 2, (normal(4),)),
    "max(keepdims)": (lambda a: (a - a.max(axis=1, keepdims=True)).sum() ** 2, (normal(3, 2),)),
    "sum(where)": (lambda a: np.sum(a ** 2, where=a > 0), (normal(5),)),
    "apply_along_axis": (lambda a: np.apply_along_axis(lambda r: r @ r, 1, a).sum(), (normal(3, 2),)),
    "piecewise": (lambda a: np.piecewise(a, [a < 0, a >= 0], [lambda z: -z, lambda z: z ** 2]).sum(), (normal(4),)),
    "polyfit": (lambda y: np.polyfit(np.arange(5.0), y, 2).sum(), (normal(5),)),
    "unwrap": (lambda a: (np.unwrap(a * 3) ** 2).sum(), (normal(5),)),
    "generator sum": (lambda y: sum(y[i] * i for i in range(4)), (normal(8),)),
    "float32 inside f": (lambda y: np.sum(np.sin(y.astype(np.float32))), (normal(8),)),
}


@pytest.mark.parametrize("engine", ["forward", "reverse"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_third_party_function_passes(name, engine):
    f, args = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = gradtest.check_gradients(f, *args, backends=[engine])
    assert report.passed, report


UNSUPPORTED = {
    # name: (f, args, the exception type, words the message must hold)
    "fft.rfft (complex values)": (lambda y: np.abs(np.fft.rfft(y)).sum(), (normal(8),),
                                  NotImplementedError, "numpy.fft.rfft"),
    "rosen_hess_prod (np.zeros filled element-wise)": (
        lambda x: so.rosen_hess_prod(x, np.ones(4)).sum(), (normal(4),), NotImplementedError, "np.zeros_like(x)"),
    "cdist with a callable metric": (lambda a: sd.cdist(a, a, lambda u, v: np.sum(u * v)).sum(), (normal(3, 2),),
                                     NotImplementedError, "metric="),
    "signal.welch (reads ndarray attributes)": (lambda a: ss.welch(a, nperseg=4)[1].sum(), (normal(8),),
                                                AttributeError, "does not accept them"),
    "special.owens_t (no rule)": (lambda x: sc.owens_t(x, 0.5).sum(), (positive(3),), NotImplementedError,
                                  "scipy.special.owens_t"),
}


@pytest.mark.parametrize("engine", ["forward", "reverse"])
@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_code_is_a_clear_error(name, engine):
    f, args, kind, words = UNSUPPORTED[name]
    report = gradtest.check_gradients(f, *args, backends=[engine])
    outcome = report.outcomes[engine]
    assert outcome.status == "error", report
    assert isinstance(outcome.exception, kind)
    assert words in outcome.message
