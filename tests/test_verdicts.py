"""The verdict on functions gradtest was not designed around: calibrated finite-difference error
bounds, per-element tolerances, kinks, vacuous cases and localisation at scale."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import gradtest
from gradtest import _core

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 40


# ---- calibration of the engine's error bound -----------------------------------------------

def _lse_offset(x):
    return np.logaddexp(x, 1000.3)


CALIBRATION = [
    # name, f on a 1-element array, the same in mpmath, sampler of x
    ("exp at 20-30", lambda x: np.exp(x[0]), mpmath.exp, (20, 30)),
    ("log near 0", lambda x: np.log(x[0]), mpmath.log, "log"),
    ("sin(50 x)", lambda x: np.sin(50 * x[0]), lambda x: mpmath.sin(50 * x), (5, 10)),
    ("x^3 at 1e3", lambda x: x[0] ** 3, lambda x: x**3, (1e3, 2e3)),
    ("tanh at saturation", lambda x: np.tanh(x[0]), mpmath.tanh, (5, 15)),
    ("rational", lambda x: (x[0] ** 2 + 1) / (x[0] - 3.5), lambda x: (x**2 + 1) / (x - mpmath.mpf(3.5)), (-3, 3)),
    ("sin(x) cos(2x)", lambda x: np.sin(x[0]) * np.cos(2 * x[0]), lambda x: mpmath.sin(x) * mpmath.cos(2 * x), (-3, 3)),
    ("log-sum-exp at 1000", lambda x: _lse_offset(x[0]),
     lambda x: mpmath.log(mpmath.exp(x) + mpmath.exp(mpmath.mpf(1000.3))), (998, 1002)),
    ("product of six terms", lambda x: np.prod(x[0] - np.array([0.0, 1.1, -2.3, 0.7, -0.2, 3.0])),
     lambda x: x * (x - mpmath.mpf(1.1)) * (x + mpmath.mpf(2.3)) * (x - mpmath.mpf(0.7)) * (x + mpmath.mpf(0.2))
     * (x - 3), (-3, 3)),
    ("float32 inside f", lambda x: np.float32(x[0]) ** 2, lambda x: x**2, (0.5, 2)),
]


def _estimate(f, x, out_eps):
    """The engine's derivative and bound for a 1-d f, with the noise probe as check_gradients runs it."""
    scale = np.maximum(np.abs(x), 1.0)
    with np.errstate(all="ignore"):
        sigma, _ = _core.fd_noise(f, (x,), None, x, None, scale, "central", True, 0.0, 0.0, out_eps, 3)
        value, err, _ = _core.fd_components(f, (x,), None, x, None, scale, "central", True, 0.0,
                                            _core.NOISE_FACTOR * sigma, out_eps, np.array([0]), float(f(x)))
    return value[0], err[0]


@pytest.mark.parametrize("name, f, fm, domain", CALIBRATION, ids=[c[0] for c in CALIBRATION])
def test_error_bound_holds_the_actual_error(name, f, fm, domain):
    # a fixed seed per case (hash() of a str changes with every interpreter)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    out_eps = float(np.finfo(np.float32).eps) if "float32" in name else float(np.finfo(np.float64).eps)
    ratios, relative = [], []
    for _ in range(60):
        x0 = 10 ** rng.uniform(-6, -1) if domain == "log" else rng.uniform(*domain)
        x = np.array([x0])
        value, err = _estimate(f, x, out_eps)
        exact = float(mpmath.diff(fm, mpmath.mpf(x0)))
        ratios.append(abs(value - exact) / err)
        relative.append(abs(value - exact) / abs(exact))
    # never below the actual error; within two orders of it (the pure-rounding cases are the
    # loose ones: there the bound is the worst case of f's rounding). Where truncation and
    # rounding are of one size (sin(50 x) near the zeros of its derivative) the bound, the
    # larger of the two estimates, can fall short of their sum: 1.32x at worst in 20,000
    # samples, 2.5 in 10,000 beyond 1, which the verdict's factor (FD_ERROR_FACTOR = 3) covers
    assert max(ratios) <= 1.0, f"{name}: actual error exceeded the bound by {max(ratios):.3g}x"
    assert np.median(1 / np.maximum(ratios, 1e-300)) <= 100
    # a saturated tanh has derivatives down to 1e-13 against values of 1: its rounding bounds
    # the relative accuracy, as float32 rounding does inside f
    limit = 1e-5 if "float32" in name else (1e-3 if "tanh" in name else 1e-10)
    assert np.median(relative) <= limit


def test_error_bound_where_truncation_and_rounding_meet():
    # the bound's known weak spot (see above), sampled densely: it may fall short of the actual
    # error there, rarely and by less than half the verdict's factor on it
    from gradtest._compare import FD_ERROR_FACTOR

    rng = np.random.default_rng(20261202)
    f, fm = CALIBRATION[2][1], CALIBRATION[2][2]
    ratios = []
    for x0 in rng.uniform(5, 10, 2000):
        value, err = _estimate(f, np.array([x0]), float(np.finfo(np.float64).eps))
        ratios.append(abs(value - float(mpmath.diff(fm, mpmath.mpf(x0)))) / err)
    assert max(ratios) <= FD_ERROR_FACTOR / 2
    assert np.mean(np.array(ratios) > 1.0) <= 0.005


# ---- no false alarms -----------------------------------------------------------------------

def _stable_lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def _softmax(x):
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def _quadratic(n, cond, rng):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(np.logspace(0, np.log10(cond), n)) @ q.T


def _correct_cases(rng):
    n = 20
    a = _quadratic(n, 1e6, rng)
    x_min = rng.uniform(-1, 1, n)
    c = x_min.copy()
    c[3] += 1e-4  # min(x, c) has its kink 1e-4 from x_3
    x_sort = rng.uniform(-1, 1, n)
    x_sort[5] = x_sort[6] + 1e-5  # a near tie in sort
    w = np.arange(n, dtype=float)
    x_mod = rng.uniform(0, 3, n)
    x_mod[2] = 2.0 - 1e-5  # just below mod's jump
    return [
        ("quadratic form, condition 1e6", lambda x: 0.5 * x @ a @ x, rng.standard_normal(n), lambda x: (a @ x,)),
        ("log-sum-exp at offset 1000", _stable_lse, 1000 + rng.standard_normal(n), lambda x: (_softmax(x),)),
        ("exp at 20-30", lambda x: np.sum(np.exp(x)), rng.uniform(20, 30, n), lambda x: (np.exp(x),)),
        ("float32 inside f", lambda x: np.sum(x.astype(np.float32) ** 2), rng.uniform(0.5, 2, n),
         lambda x: (2 * x,)),
        ("float32 inputs", lambda x: np.sum(np.sin(x) * x), rng.uniform(0.5, 2, n).astype(np.float32),
         lambda x: (np.cos(x) * x + np.sin(x),)),
        ("min with a kink 1e-4 away", lambda x: np.sum(np.minimum(x, c)), x_min,
         lambda x: ((x < c).astype(float),)),
        ("sort with a near tie", lambda x: np.sum(np.sort(x) * w), x_sort,
         lambda x: (w[np.argsort(np.argsort(x))],)),
        ("mod just below its jump", lambda x: np.sum(np.mod(x, 1.0) * x), x_mod, lambda x: (np.mod(x, 1.0) + x,)),
        ("tiny x", lambda x: np.sum(np.exp(x) * x), rng.uniform(-1, 1, n) * 1e-5,
         lambda x: (np.exp(x) * (1 + x),)),
        ("large offset", lambda x: np.sum((x - 1e6) ** 2), 1e6 + rng.uniform(-1, 1, n),
         lambda x: (2 * (x - 1e6),)),
        ("sin at high frequency", lambda x: np.sum(np.sin(50 * x)), rng.uniform(5, 10, n),
         lambda x: (50 * np.cos(50 * x),)),
    ]


@pytest.mark.parametrize("index", range(11))
def test_no_false_alarm_on_correct_gradients(index):
    name, f, x, grad = _correct_cases(np.random.default_rng(index))[index]
    report = gradtest.check_gradients(f, x, gradient=grad)
    assert report.passed, f"{name}\n{report}"


def test_scipy_test_problems_with_analytic_derivatives():
    """Third-party code: SciPy's Rosenbrock and special functions with their derivatives."""
    so = pytest.importorskip("scipy.optimize")
    sp = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, 12)
    assert gradtest.check_gradients(so.rosen, x, gradient=lambda x: (so.rosen_der(x),), backends=["user"]).passed
    hvp = so.rosen_hess(x) @ np.ones(12)
    assert gradtest.check_gradients(lambda x: so.rosen_der(x) @ np.ones(12), x,
                                    gradient=lambda x: (so.rosen_hess(x) @ np.ones(12),), backends=["user"]).passed
    assert np.all(np.isfinite(hvp))
    y = rng.uniform(0.2, 3, 10)
    cases = [
        (lambda y: np.sum(sp.gammaln(y)), lambda y: (sp.digamma(y),)),
        (lambda y: np.sum(sp.erf(y)), lambda y: (2 / np.sqrt(np.pi) * np.exp(-y**2),)),
        (lambda y: np.sum(sp.expit(y)), lambda y: (sp.expit(y) * (1 - sp.expit(y)),)),
        (lambda y: np.sum(sp.log_ndtr(y)), lambda y: (np.exp(-y**2 / 2 - sp.log_ndtr(y)) / np.sqrt(2 * np.pi),)),
        (lambda y: np.sum(sp.i0(y)), lambda y: (sp.i1(y),)),
    ]
    for f, g in cases:
        report = gradtest.check_gradients(f, y, gradient=g, backends=["user"])
        assert report.passed, str(report)
        # the same derivatives off by 3e-6 relative in one element are caught
        def wrong(y, g=g):
            (d,) = g(y)
            d = d.copy()
            d[4] *= 1 + 3e-6
            return (d,)
        bad = gradtest.check_gradients(f, y, gradient=wrong, backends=["user"])
        assert bad.outcomes["user"].status == "fail" and bad.outcomes["user"].worst.index == (4,), str(bad)


# ---- sensitivity -----------------------------------------------------------------------------

def _smallest_caught(f, grad, x, i, levels):
    for rel in levels:
        def wrong(x, rel=rel):
            (g,) = grad(x)
            g = np.array(g, dtype=float)
            g[i] *= 1 + rel
            return (g,)
        if gradtest.check_gradients(f, x, gradient=wrong, backends=["user"]).outcomes["user"].status == "fail":
            return rel
    return math.inf


def test_one_wrong_element_at_1e_7_is_caught_in_every_position_of_well_scaled_functions():
    so = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.5, 1.5, 20)
    for i in range(20):
        assert _smallest_caught(so.rosen, lambda x: (so.rosen_der(x),), x, i, [1e-7]) == 1e-7, i
    y = rng.uniform(-3, 3, 10)
    f = lambda y: np.sum(np.sin(y) * np.cos(2 * y))  # noqa: E731
    g = lambda y: (np.cos(y) * np.cos(2 * y) - 2 * np.sin(y) * np.sin(2 * y),)  # noqa: E731
    for i in range(10):
        assert _smallest_caught(f, g, y, i, [1e-7]) == 1e-7, i


def test_ill_scaled_geometric_mean_of_the_smallest_caught_error_is_below_1e_6():
    rng = np.random.default_rng(4)
    s = np.logspace(-6, 6, 20)
    x = rng.uniform(0.5, 2, 20)
    levels = [10.0**-k for k in range(9, -1, -1)]
    caught = [_smallest_caught(lambda x: np.sum(s * x**2), lambda x: (2 * s * x,), x, i, levels) for i in range(20)]
    assert np.all(np.isfinite(caught))
    assert math.exp(np.mean(np.log(caught))) <= 1e-6, caught


def test_report_counts_failed_elements_and_names_the_dominant_term():
    x = np.linspace(0.5, 2.0, 100)
    def wrong(x):
        g = 2 * x
        g[[7, 40]] += 1e-3
        return (g,)
    report = gradtest.check_gradients(lambda x: np.sum(x**2), x, gradient=wrong)
    user = report.outcomes["user"]
    assert (user.n_failed, user.n_compared) == (2, 100)
    assert "2 of 100 elements out of tolerance" in user.message
    assert user.worst.dominant and user.worst.dominant in user.message
    assert "2/100" in str(report)
    assert "the hand-written gradient is the odd one out" in str(report)


# ---- kinks -----------------------------------------------------------------------------------

def test_kink_is_reported_and_a_value_between_the_one_sided_derivatives_passes():
    x = np.array([0.3, -0.2, 0.5, 0.5, 0.1])  # a tie in max
    report = gradtest.check_gradients(np.max, x, gradient=lambda x: (np.eye(5)[2],), backends=["user", "reverse"])
    assert report.passed, str(report)
    notes = [n for o in report.outcomes.values() for n in o.notes]
    assert any("kink at args[0][2]: left 0, right 1; user gave 1" in n for n in notes), notes
    # kinks="fail" holds it to the central difference (0.5)
    strict = gradtest.check_gradients(np.max, x, gradient=lambda x: (np.eye(5)[2],), backends=["user"], kinks="fail")
    assert strict.outcomes["user"].status == "fail"


def test_kink_does_not_excuse_a_value_outside_the_one_sided_derivatives():
    x = np.array([0.4, 0.0, -0.3])
    report = gradtest.check_gradients(lambda x: np.sum(np.abs(x)), x,
                                      gradient=lambda x: (np.array([1.0, 2.0, -1.0]),), backends=["user"])
    assert report.outcomes["user"].status == "fail"
    assert report.outcomes["user"].worst.index == (1,)
    assert any("kink at args[0][1]: left -1, right 1; user gave 2" in n for n in report.outcomes["user"].notes)


# ---- no vacuous passes -----------------------------------------------------------------------

def test_underflowing_ground_truth_is_an_error_not_a_pass():
    x = np.array([1e-300, 2e-300, -3e-300])
    report = gradtest.check_gradients(lambda x: np.sum(x**2), x, gradient=lambda x: (3 * x,))
    assert not report.passed
    assert report.outcomes["user"].status == "error"
    assert "underflows" in report.outcomes["user"].message
    with pytest.raises(gradtest.GroundTruthError, match="underflows"):
        gradtest.test_gradients(lambda x: np.sum(x**2), x, gradient=lambda x: (2 * x,))


def test_subnormal_input_is_named():
    x = np.array([1.0, 5e-310, 2.0])
    report = gradtest.check_gradients(lambda x: np.sum(x[1] ** 2 * 1e300 + x), x,
                                      gradient=lambda x: (np.ones(3),), backends=["user"])
    assert report.outcomes["user"].status in ("pass", "error")
    if report.outcomes["user"].status == "error":
        assert "args[0][1]" in report.outcomes["user"].message


def test_zero_size_input_is_never_a_silent_pass():
    report = gradtest.check_gradients(lambda x: np.sum(x), np.zeros(0), gradient=lambda x: (x,))
    assert not report.passed
    assert all(o.status == "error" for o in report.outcomes.values())
    assert "0 elements" in report.outcomes["user"].message
    with pytest.raises(gradtest.GroundTruthError, match="nothing to compare"):
        gradtest.test_gradients(lambda x: np.sum(x), np.zeros(0), gradient=lambda x: (x,))


# ---- ground-truth failures say what happened ------------------------------------------------

def test_nan_in_the_input_is_reported_at_its_element():
    x = np.array([1.0, np.nan, 2.0])
    report = gradtest.check_gradients(np.sum, x, gradient=lambda x: (np.ones(3),))
    assert "the input is not finite at args[0][1]" in report.outcomes["user"].message


def test_non_finite_f_at_x_is_reported_before_perturbed_points():
    x = np.array([0.0, 1.0])
    with np.errstate(divide="ignore"):  # the suite turns warnings into errors
        report = gradtest.check_gradients(lambda x: np.sum(np.log(x)), x, gradient=lambda x: (1 / x,))
    assert "f(x) is not finite" in report.outcomes["user"].message


def test_exception_in_f_names_its_type_and_line():
    def f(x):
        return np.sum(x) + {}["missing"]

    report = gradtest.check_gradients(f, np.ones(3), gradient=lambda x: (np.ones(3),), backends=["user"])
    message = report.outcomes["user"].message
    assert "KeyError" in message and "test_verdicts.py:" in message


def test_float32_output_sets_the_rounding_of_the_ground_truth():
    x = np.random.default_rng(2).uniform(0.5, 2, 30)
    report = gradtest.check_gradients(lambda x: np.sum(np.float32(1) * x.astype(np.float32) ** 3), x,
                                      gradient=lambda x: (3 * x**2,))
    assert report.passed, str(report)


def test_output_shape_that_depends_on_x_does_not_stop_the_ground_truth():
    x = np.array([0.2, 0.45, 0.8, 0.9])
    report = gradtest.check_gradients(lambda x: x[x > 0.5] ** 2, x, backends=["reverse"])
    assert report.passed, str(report)


# ---- scale -------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrong", [(123_457,), (5, 150_001)])
def test_directional_mode_names_sparse_wrong_elements(wrong):
    n = 200_000
    x = np.random.default_rng(9).uniform(0.5, 2.0, n)

    def grad(x):
        g = np.cos(x) * x + np.sin(x)
        g[list(wrong)] *= 1 + 1e-5
        return (g,)

    report = gradtest.check_gradients(lambda x: np.sum(np.sin(x) * x), x, gradient=grad, backends=["user"],
                                      mode="directional", n_directions=16)
    user = report.outcomes["user"]
    assert user.status == "fail"
    assert user.worst.index in {(i,) for i in wrong}
    for i in wrong:
        assert f"args[0][{i}]" in user.message
    correct = gradtest.check_gradients(lambda x: np.sum(np.sin(x) * x), x,
                                       gradient=lambda x: (np.cos(x) * x + np.sin(x),), backends=["user"],
                                       mode="directional", n_directions=16)
    assert correct.passed, str(correct)


def test_directions_are_regenerated_identically():
    scale = np.linspace(0.5, 2.0, 1000)
    v = _core.direction(11, 3, scale)
    assert np.array_equal(v, _core.direction(11, 3, scale))
    z = _core.direction_components(11, 5, 17)
    assert z[3] * scale[17] == v[17]
    g = np.random.default_rng(0).standard_normal(1000)
    dots, norms, abssum = _core.direction_products(11, 5, scale, g)
    assert dots[3] == pytest.approx(g @ v, rel=1e-12)
    assert norms[3] == pytest.approx(np.linalg.norm(g * v), rel=1e-12)
    assert abssum[3] == pytest.approx(np.sum(np.abs(g * v)), rel=1e-12)
    r = np.arange(5.0)
    combined, sq = _core.direction_combine(11, scale, r)
    full = np.array([_core.direction(11, j, scale) for j in range(5)])
    np.testing.assert_allclose(combined, r @ full, rtol=1e-12)
    np.testing.assert_allclose(sq, np.sum(full**2, axis=0), rtol=1e-12)


def test_gradient_function_mutating_its_inputs_gets_a_note():
    x = np.array([1.0, 2.0, 3.0])

    def g(x):
        out = 2 * x
        x[0] = 99.0
        return (out,)

    report = gradtest.check_gradients(lambda x: np.sum(x**2), x, gradient=g, backends=["user"])
    assert x[0] == 1.0
    assert any("gradient= mutated its inputs: args[0]" in n for n in report.notes)
