"""Item assignment (``y[i] = v``) on the engines' arrays: NumPy's semantics or a clear refusal.

Scientific code often fills an array element by element (``out = np.zeros_like(x)``,
``out[i] = ...``). Both engines keep the assigned values' derivatives. Forward mode assigns in
place, and its views (slices, transposes, flips, diagonals) are real views, so an assignment
through one shows in the other as in NumPy. Reverse mode records each assignment as a new node;
where NumPy would share the change between an array and a live view of it, reverse refuses with
a message instead of computing something NumPy would not.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

import gradtest
from gradtest.forward import Dual
from gradtest.reverse import gradient_reverse

ENGINES = ("forward", "reverse")


def engine_gradient(engine: str, f, x: np.ndarray) -> np.ndarray:
    return gradtest.gradient(f, x, backend=engine)[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_rosen_der_gradient_is_scipys_hessian(engine):
    # third-party code that fills np.zeros_like(x) slice by slice: d/dx <rosen_der(x), w> is
    # rosen_hess(x) @ w, SciPy's own analytic Hessian
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=7), rng.normal(size=7)
    g = engine_gradient(engine, lambda x: np.sum(scipy.optimize.rosen_der(x) * w), x)
    np.testing.assert_allclose(g, scipy.optimize.rosen_hess(x) @ w, rtol=1e-12, atol=1e-12)


def recurrence(x):
    y = np.empty_like(x)
    y[0] = x[0]
    for i in range(1, len(x)):
        y[i] = y[i - 1] * x[i] + 1.0
    return np.sum(y)


def scatter_and_repeat(x):
    out = np.zeros_like(x)
    out[0] = 3.0 * x[1]
    out[1:3] = x[:2] ** 2
    out[[3, 3]] = x[4]  # a repeated index: the last assignment wins, as in NumPy
    out[x > 10.0] = 0.0  # a boolean mask (selects nothing here)
    return np.sum(out * np.arange(1.0, 6.0))


def rows_of_a_reshape(x):
    a = np.zeros_like(x).reshape(2, 3)  # a view of a temporary nobody else holds
    for i in range(2):
        a[i] = x[3 * i:3 * i + 3] * (i + 1)
    a[:, 1] *= 2.0
    return np.prod(a @ np.ones(3))


def assign_constants_into_a_copy(x):
    y = x.copy()
    y[1] = 0.0
    y[2] *= 5.0
    return np.sum(y ** 2)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("f", [recurrence, scatter_and_repeat, rows_of_a_reshape, assign_constants_into_a_copy])
def test_assignment_patterns_pass_their_check(engine, f):
    x = np.linspace(0.3, 1.1, 6 if f is rows_of_a_reshape else 5)
    before = x.copy()
    report = gradtest.check_gradients(f, x, backends=[engine])
    assert report.passed, report
    assert np.array_equal(x, before)


@pytest.mark.parametrize("engine", ENGINES)
def test_assigned_elements_take_the_values_derivative(engine):
    def f(x):
        y = np.zeros_like(x)
        y[2] = x[0] * x[1]
        y[0] = 7.0
        return np.sum(y * np.array([1.0, 2.0, 3.0]))

    g = engine_gradient(engine, f, np.array([2.0, 5.0, 1.0]))
    np.testing.assert_array_equal(g, [15.0, 6.0, 0.0])


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_values_assigned_into_float64_are_cast(engine):
    def f(x):
        y = np.zeros(3, dtype=np.float64) + np.zeros_like(x, dtype=np.float64)
        y[1] = x[1].astype(np.float32) * 2.0
        return np.sum(y)

    g = engine_gradient(engine, f, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, 2.0, 0.0])


def test_a_copy_is_independent_of_its_original():
    def f(x):
        y = x * 1.0
        z = y.copy()
        z[0] = 0.0
        return np.sum(y) + np.sum(z)

    np.testing.assert_array_equal(gradient_reverse(f, np.ones(3))[0], [1.0, 2.0, 2.0])


def test_zeros_like_of_another_dtype_stays_plain():
    d = Dual(np.ones(3), np.ones((1, 3)))
    assert not isinstance(np.zeros_like(d, dtype=int), Dual)
    z = np.zeros_like(d)
    assert isinstance(z, Dual) and not z.tangents.any()


def test_forward_views_share_assignments_as_numpys_do():
    def f(x):
        a = x.reshape(2, 3).copy()
        t = a.T
        a[1] = 7.0  # shows in t
        t[0, 0] = x[0] * x[1]  # shows in a
        return np.sum(t * t) + a[0, 0]

    x = np.linspace(0.5, 1.5, 6)
    report = gradtest.check_gradients(f, x, backends=["forward"])
    assert report.passed, report


@pytest.mark.parametrize("make_view", [lambda y: y[1:3], lambda y: y.T, lambda y: y.reshape(1, -1),
                                       lambda y: np.flip(y)], ids=["slice", "T", "reshape", "flip"])
def test_reverse_refuses_assignment_while_a_view_is_alive(make_view):
    def into_base(x):
        y = x * 1.0
        v = make_view(y)
        y[1] = 7.0
        return np.sum(v) * np.sum(y)

    def into_view(x):
        y = x * 1.0
        v = make_view(y)
        v[..., 0] = 7.0
        return np.sum(v) * np.sum(y)

    x = np.linspace(0.5, 1.5, 4)
    with pytest.raises(NotImplementedError, match="while a view of it"):
        gradient_reverse(into_base, x)
    with pytest.raises(NotImplementedError, match="into a view of another array"):
        gradient_reverse(into_view, x)
    # forward agrees with NumPy on both
    for f in (into_base, into_view):
        assert gradtest.check_gradients(f, x, backends=["forward"]).passed


def test_a_copied_view_may_be_assigned():
    def f(x):
        y = x * 1.0
        v = y[1:3].copy()
        y[1] = 7.0
        v[0] = 2.0
        return np.sum(v) * np.sum(y)

    x = np.linspace(0.5, 1.5, 4)
    assert gradtest.check_gradients(f, x, backends=["reverse"]).passed


@pytest.mark.parametrize("engine", ENGINES)
def test_assignment_into_an_input_is_reported_as_a_mutation(engine):
    # gradtest never changes a caller's arrays, and says when f changes its own inputs
    def f(x):
        x[0] = 2.0 * x[1]
        return np.sum(x ** 3)

    x = np.ones(3)
    report = gradtest.check_gradients(f, x, backends=[engine])
    assert not report.passed and "mutated its inputs" in str(report)
    np.testing.assert_array_equal(x, np.ones(3))


def test_reverse_gradient_of_a_function_that_assigns_into_its_input():
    # outside a check (no ground truth), reverse differentiates at the input's value on entry
    def f(x):
        x[0] = 2.0 * x[1]
        return np.sum(x ** 3)

    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(gradient_reverse(f, x)[0], [0.0, 24.0 * 4.0 + 3.0 * 4.0, 27.0])
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


def test_reverse_read_only_views_refuse_like_numpy():
    def f(x):
        a = x.reshape(2, 2) * 1.0
        np.diagonal(a)[0] = 1.0
        return np.sum(a)

    with pytest.raises(ValueError, match="read-only"):
        f(np.ones(4))  # NumPy's own behaviour
    with pytest.raises((ValueError, NotImplementedError)):
        gradient_reverse(f, np.ones(4))


@pytest.mark.parametrize("engine", ENGINES)
def test_an_ad_value_stored_into_a_plain_array_is_a_clear_error(engine):
    # scipy.optimize.rosen_hess_prod fills np.zeros(n) element by element
    f = lambda x: np.sum(scipy.optimize.rosen_hess_prod(x, np.ones(4)))  # noqa: E731
    report = gradtest.check_gradients(f, np.linspace(0.5, 1.5, 4), backends=[engine])
    outcome = report.outcomes[engine]
    assert outcome.status == "error"
    assert isinstance(outcome.exception, NotImplementedError)
    assert "np.zeros_like(x)" in str(outcome.exception)


@pytest.mark.parametrize("engine", ENGINES)
def test_np_array_of_an_engine_array_is_a_copy(engine):
    def f(x):
        y = x * 1.0
        z = np.array(y)
        z[0] = 0.0
        w = np.asarray(y)  # the same array, as in NumPy
        return np.sum(y) + np.sum(z) + np.sum(w)

    np.testing.assert_array_equal(engine_gradient(engine, f, np.ones(3)), [2.0, 3.0, 3.0])


@pytest.mark.parametrize("engine", ENGINES)
def test_arrays_created_like_an_ad_value_keep_assigned_derivatives(engine):
    def f(x):
        h = np.zeros(3, like=x)
        h[0] = 2.0 * x[1]
        h[2] = x[0] ** 2
        g = np.full((2,), 3.0, like=x)
        g[1] = x[2]
        return np.sum(h) + np.sum(g * g) + np.sum(np.ones((2, 2), like=x)) + np.sum(np.empty(0, like=x))

    np.testing.assert_array_equal(engine_gradient(engine, f, np.array([1.0, 2.0, 3.0])), [2.0, 2.0, 6.0])
    assert type(np.zeros(3, like=np.ones(2))) is np.ndarray
