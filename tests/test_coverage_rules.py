"""The composition rules of gradtest._rules_more reproduce NumPy's values (they are NumPy calls,
so on plain arrays they must compute what NumPy computes), and refuse what they do not support."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradtest import _rules_more as M

rng = np.random.default_rng(7)
X = rng.standard_normal(6)
A = rng.standard_normal((3, 4))
NANS = np.where([False, True, False, False, True, False], np.nan, X)
NANS2 = np.where([[False, True, False, True], [False, False, False, False], [True, True, True, True]],
                 np.nan, A)

# (NumPy function, composition, args, kwargs)
SAME = [
    (np.nansum, M.nansum, (NANS,), {}), (np.nansum, M.nansum, (NANS2,), {"axis": 1}),
    (np.nanprod, M.nanprod, (NANS2,), {"axis": 0}), (np.nancumsum, M.nancumsum, (NANS2,), {"axis": 1}),
    (np.nancumprod, M.nancumprod, (NANS,), {}), (np.nanmean, M.nanmean, (NANS2,), {"axis": 1}),
    (np.nanvar, M.nanvar, (NANS2,), {"axis": 1}), (np.nanvar, M.nanvar, (NANS,), {"ddof": 1}),
    (np.nanstd, M.nanstd, (NANS2,), {"axis": 0, "keepdims": True}),
    (np.nanmax, M.nanmax, (NANS2,), {"axis": 1}), (np.nanmin, M.nanmin, (NANS,), {}),
    (np.ptp, M.ptp, (A,), {"axis": 1}), (np.average, M.average, (A,), {"axis": 1, "weights": np.arange(1.0, 5.0)}),
    (np.average, M.average, (A,), {"weights": np.abs(A), "returned": True}),
    (np.copysign, M.copysign, (X, -X[::-1]), {}), (np.heaviside, M.heaviside, (np.r_[X, 0.0], 0.5), {}),
    (np.sinc, M.sinc, (np.r_[X, 0.0],), {}),
    (np.nan_to_num, M.nan_to_num, (np.array([1.0, np.nan, np.inf, -np.inf]),), {}),
    (np.nan_to_num, M.nan_to_num, (np.array([1.0, np.nan, np.inf, -np.inf]),), {"nan": 2.0, "posinf": 9.0}),
    (np.rollaxis, M.rollaxis, (np.zeros((2, 3, 4)), 2), {}), (np.rollaxis, M.rollaxis, (np.zeros((2, 3, 4)), 0, 3), {}),
    (np.diagflat, M.diagflat, (A[:2, :2],), {"k": 1}),
    (np.split, M.split, (X, 3), {}), (np.split, M.split, (X, [1, 4]), {}),
    (np.array_split, M.array_split, (np.arange(7.0), 3), {}), (np.hsplit, M.hsplit, (A, 2), {}),
    (np.vsplit, M.vsplit, (A, [1]), {}), (np.dsplit, M.dsplit, (np.zeros((2, 2, 4)), 2), {}),
    (np.pad, M.pad, (A, ((1, 2), (0, 1))), {"constant_values": ((1.0, 2.0), (3.0, 4.0))}),
    (np.pad, M.pad, (A, 2), {"mode": "edge"}), (np.pad, M.pad, (A, (2, 3)), {"mode": "reflect"}),
    (np.pad, M.pad, (A, 1), {"mode": "symmetric"}), (np.pad, M.pad, (X, (4, 1)), {"mode": "wrap"}),
    (np.cross, M.cross, (A[:, :3], A[::-1, 1:]), {}), (np.cross, M.cross, (A[:, :3].T, A[:, 1:].T), {"axis": 0}),
    (np.kron, M.kron, (A, A[:2, :2]), {}), (np.kron, M.kron, (X, A), {}),
    (np.partition, M.partition, (X, 2), {}), (np.partition, M.partition, (A, 1), {"axis": 0}),
    (np.select, M.select, ([X > 0.5, X < -0.5], [X, X ** 2], 7.0), {}),
    (np.linspace, M.linspace, (0.5, 2.0, 7), {}), (np.linspace, M.linspace, (X[:2], X[2:4], 4), {"axis": -1}),
    (np.linspace, M.linspace, (0.0, 1.0, 5), {"endpoint": False, "retstep": True}),
    (np.gradient, M.gradient, (X,), {}), (np.gradient, M.gradient, (A,), {}),
    (np.gradient, M.gradient, (A, 0.5), {"axis": 1, "edge_order": 2}),
    (np.gradient, M.gradient, (X, np.cumsum(np.arange(1.0, 7.0))), {"edge_order": 2}),
    (np.append, M.append, (A, X), {}), (np.append, M.append, (A, A[:1]), {"axis": 0}),
    (np.convolve, M.convolve, (X, X[:3]), {}), (np.convolve, M.convolve, (X[:2], X), {"mode": "same"}),
    (np.convolve, M.convolve, (X[:3], X), {"mode": "valid"}), (np.correlate, M.correlate, (X, X[:2]), {"mode": "full"}),
    (np.trapezoid, M.trapezoid, (A,), {"axis": 0}), (np.trapezoid, M.trapezoid, (X, np.cumsum(np.abs(X))), {}),
    (np.interp, M.interp, (np.array([-1.0, 0.3, 2.5, 9.0]), np.arange(5.0), X[:5]), {}),
    (np.interp, M.interp, (np.array([-1.0, 0.3, 2.5, 9.0]), np.arange(5.0), X[:5]), {"left": -3.0, "right": 4.0}),
    (np.cov, M.cov, (A,), {}), (np.cov, M.cov, (A, A[::-1]), {"rowvar": False, "ddof": 0}),
    (np.corrcoef, M.corrcoef, (A,), {}), (np.quantile, M.quantile, (X, [0.2, 0.9]), {}),
    (np.quantile, M.quantile, (A, 0.4), {"axis": 1, "keepdims": True}), (np.median, M.median, (A,), {"axis": 0}),
    (np.percentile, M.percentile, (A, 35), {}), (np.polyval, M.polyval, (X[:3], A), {}),
    (np.vander, M.vander, (X[:3],), {"increasing": True}), (np.meshgrid, M.meshgrid, (X[:3], X[:2]), {}),
    (np.meshgrid, M.meshgrid, (X[:3], X[:2], X[:4]), {"indexing": "ij", "sparse": True}),
    (np.delete, M.delete, (A, [0, 2]), {"axis": 1}), (np.insert, M.insert, (X, 2, [7.0, 8.0]), {}),
    (np.insert, M.insert, (X, [1, 4], 3.0), {}), (np.compress, M.compress, ([True, False, True], A), {"axis": 0}),
    (np.extract, M.extract, (A > 0, A), {}), (np.choose, M.choose, ([0, 1, 1], [X[:3], X[3:]]), {}),
    (np.resize, M.resize, (X, (4, 4)), {}), (np.ediff1d, M.ediff1d, (A,), {"to_end": [1.0, 2.0]}),
    (np.block, M.block, ([[A, A], [A, A]],), {}), (np.block, M.block, ([X, 1.0, X],), {}),
    (np.linalg.vector_norm, M.vector_norm, (A,), {"axis": 1, "ord": 3}),
    (np.linalg.matrix_norm, M.matrix_norm, (A,), {}), (np.vecdot, M.vecdot, (A, A[::-1]), {}),
    (np.cumulative_sum, M.cumulative_sum, (X,), {"include_initial": True}), (np.ldexp, M.ldexp, (X, 3), {}),
]


@pytest.mark.parametrize("np_f, rule, args, kwargs", SAME, ids=[f"{s[0].__name__}-{i}" for i, s in enumerate(SAME)])
def test_composition_value_is_numpys(np_f, rule, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np_f(*args, **kwargs)
        got = rule(*args, **kwargs)
    if isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        pairs = list(zip(got, expected))
    else:
        pairs = [(got, expected)]
    for g, e in pairs:
        g, e = np.asarray(g, dtype=float), np.asarray(e, dtype=float)
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-15, equal_nan=True)


def test_composition_table_names_numpy_functions():
    assert all(callable(f) for f in M.COMPOSITIONS)
    assert M.COMPOSITIONS[np.pad] is M.pad


@pytest.mark.parametrize("call, error", [
    (lambda: M.pad(X, 1, mode="mean"), NotImplementedError),
    (lambda: M.pad(X, 1, mode="reflect", reflect_type="odd"), NotImplementedError),
    (lambda: M.split(X, 4), ValueError),
    (lambda: M.vsplit(X, 2), ValueError),
    (lambda: M.cross(X[:2], X[2:4]), NotImplementedError),
    (lambda: M.select([X > 0], [X, X]), ValueError),
    (lambda: M.average(A, weights=np.zeros(4), axis=1), ZeroDivisionError),
    (lambda: M.gradient(X[:2], edge_order=2), ValueError),
])
def test_composition_refusals(call, error):
    with pytest.raises(error):
        call()


# ---- refusals and degenerate inputs in both engines -----------------------------------------

ENGINES = ("forward", "reverse")


def _error(f, *args, engine):
    """What the engine raises running f on its arrays (every argument differentiated)."""
    from gradtest.forward import jvp
    from gradtest.reverse import vjp
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if engine == "forward":
                jvp(f, list(args), [np.ones_like(a) for a in args])
            else:
                vjp(lambda *a: np.sum(f(*a)), args, None)
    except Exception as err:
        return err
    raise AssertionError(f"{engine} did not raise")


ROTATION = np.array([[0.0, -1.0], [1.0, 0.0]]) + 0.1 * np.eye(2)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("f, x, words", [
    (lambda a: np.linalg.eig(a)[0], ROTATION, "complex eigenvalues"),
    (lambda a: np.linalg.eigvals(a), ROTATION, "complex eigenvalues"),
    (lambda a: np.linalg.pinv(a), np.outer([1.0, 2.0, 3.0], [1.0, -1.0]), "rank-deficient"),
    (lambda a: np.linalg.svd(a)[0], np.arange(6.0).reshape(3, 2) + np.eye(3, 2), "full_matrices=False"),
    (lambda a: np.linalg.qr(a)[1], np.arange(6.0).reshape(2, 3) + 1, "wide matrix"),
    (lambda a: np.linalg.qr(a, mode="complete")[0], np.arange(6.0).reshape(3, 2) + 1, "mode='complete'"),
    (lambda a: np.linalg.svd(a, hermitian=True)[1], np.eye(2) * 2, "hermitian=True"),
])
def test_linalg_refusals(f, x, words, engine):
    err = _error(f, x, engine=engine)
    assert isinstance(err, NotImplementedError) and words in str(err)


@pytest.mark.parametrize("engine", ENGINES)
def test_singular_matrix_raises_numpys_error(engine):
    err = _error(lambda a: np.linalg.inv(a), np.ones((2, 2)), engine=engine)
    assert isinstance(err, np.linalg.LinAlgError)


def test_repeated_eigenvalues_give_nonfinite_vectors_and_finite_values():
    from gradtest.forward import jvp
    a = np.diag([2.0, 2.0, 5.0])
    da = np.array([[0.1, 0.3, 0.0], [0.3, -0.2, 0.1], [0.0, 0.1, 0.4]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (_, _), (dw, dv) = jvp(lambda m: tuple(np.linalg.eigh(m)), [a], [da])
    assert np.all(np.isfinite(dw))
    assert not np.all(np.isfinite(dv))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("f, words", [
    (lambda v, x: np.sum(__import__("scipy.special").special.jv(v, x)), "scipy.special.jv: no derivative"),
    (lambda v, x: np.sum(__import__("scipy.special").special.iv(v, x)), "scipy.special.iv: no derivative"),
    (lambda v, x: np.sum(__import__("scipy.special").special.polygamma(v, x)), "scipy.special.polygamma"),
])
def test_scipy_constant_arguments_refuse_derivatives(f, words, engine):
    pytest.importorskip("scipy")
    err = _error(f, np.array([1.5, 2.5]), np.array([0.7, 1.2]), engine=engine)
    assert isinstance(err, NotImplementedError) and words in str(err)


def test_dispatchers_leave_plain_calls_to_scipy():
    special = pytest.importorskip("scipy.special")
    stats = pytest.importorskip("scipy.stats")
    from gradtest import forward  # loads the rules, which install the dispatchers
    assert forward.Dual
    x = rng.standard_normal((3, 4))
    for name in ("logsumexp", "softmax", "log_softmax"):
        f = getattr(special, name)
        assert f.__gradtest_original__ is f.__wrapped__
        np.testing.assert_array_equal(f(x, axis=1), f.__wrapped__(x, axis=1))
    np.testing.assert_array_equal(stats.norm.logpdf(x, 0.5, 2.0), stats.norm.logpdf.__wrapped__(x, 0.5, 2.0))
    assert stats.norm.logpdf.__doc__ == stats.norm.logpdf.__wrapped__.__doc__


def test_rules_install_when_scipy_is_imported_after_the_engines():
    import subprocess
    import sys
    code = ("import sys, numpy as np, gradtest.forward, gradtest.reverse;"
            "assert 'scipy' not in sys.modules;"
            "import scipy.special as sc, scipy.stats as st;"
            "from gradtest.forward import Dual;"
            "d = Dual(np.array([0.3, 0.9]), np.eye(2));"
            "y = sc.logsumexp(d) + np.sum(sc.gammaln(d + 1)) + np.sum(st.norm.logpdf(d));"
            "print(np.round(y.tangents, 12).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from scipy.special import digamma, softmax
    x = np.array([0.3, 0.9])
    expected = softmax(x) + digamma(x + 1) - x
    np.testing.assert_allclose(eval(out.stdout), expected, rtol=1e-10)
