"""The two AD engines agree with each other, with finite differences where f is smooth, and with
NumPy on the primal, on adversarial inputs: ties, zeros, NaN, constant slices, ddof >= n,
zero-size and 0-d arrays, float32, non-contiguous views.

The edge rules asserted here are the ones docs/forward.rst and docs/reverse.rst document: a zero
tangent or cotangent meeting an infinite partial contributes 0 (so std of a constant slice and
norm at 0 have derivative 0); max/min give a NaN element the derivative (it is what they return);
var/std with ddof >= n have a NaN derivative (NumPy's value is inf or NaN there)."""

import warnings

import numpy as np
import pytest

from gradtest.forward import Dual, jvp
from gradtest.reverse import vjp


def forward_gradient(f, x):
    d = Dual(x, np.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape))
    out = f(d)
    if not isinstance(out, Dual):
        return np.zeros(x.shape)
    return out.tangents.reshape(x.shape)


def reverse_gradient(f, x):
    _, (g,) = vjp(f, (x,), None)
    return g


def central_difference(f, x, h=1e-6):
    g = np.zeros(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        g[i] = (f(x + e.reshape(x.shape)) - f(x - e.reshape(x.shape))) / (2 * h)
    return g.reshape(x.shape)


def primal(f, x):
    value, _ = jvp(f, [x], [np.zeros_like(x)])
    return np.asarray(value)


S = np.sum
# (id, f returning a scalar, x, smooth at x)
CASES = [
    ("std_constant_slice", lambda x: S(np.std(x, axis=1)), np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]), False),
    ("var_constant_slice", lambda x: S(np.var(x, axis=1)), np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]), True),
    ("std_constant_all", lambda x: np.std(x), np.full(4, 3.0), False),
    ("norm_at_zero", lambda x: np.linalg.norm(x), np.zeros(3), False),
    ("norm_axis_at_zero", lambda x: S(np.linalg.norm(x, axis=0)), np.array([[0.0, 1.0], [0.0, 2.0]]), False),
    ("norm_smooth", lambda x: np.linalg.norm(x), np.array([1.0, -2.0, 0.5]), True),
    ("sqrt_at_zero_times_zero", lambda x: S(np.sqrt(x * x)), np.array([0.0, 2.0]), False),
    ("max_with_nan", lambda x: np.max(x), np.array([1.0, np.nan, 2.0]), False),
    ("min_with_nan", lambda x: np.min(x), np.array([np.nan, 1.0, np.nan]), False),
    ("max_ties", lambda x: np.max(x), np.array([3.0, 1.0, 3.0]), False),
    ("max_axis_ties", lambda x: S(np.max(x, axis=0)), np.array([[1.0, 2.0], [1.0, 0.0]]), False),
    ("var_ddof_n", lambda x: np.var(x, ddof=3), np.array([1.0, 2.0, 4.0]), False),
    ("var_ddof_gt_n", lambda x: np.var(x, ddof=5), np.array([1.0, 2.0, 4.0]), False),
    ("std_ddof_n", lambda x: np.std(x, ddof=2), np.array([1.0, 2.0]), False),
    ("var_ddof_n_axis", lambda x: S(np.var(x, axis=0, ddof=2)), np.array([[1.0, 2.0], [1.0, 5.0]]), False),
    ("var_ddof_1", lambda x: np.var(x, ddof=1), np.array([1.0, 2.0, 4.0]), True),
    ("where_float32_scalar", lambda x: S(np.where(x > 0.5, x, 2.0) * x), np.array([0.2, 0.9, 0.7], np.float32), True),
    ("where_scalar_float32", lambda x: S(np.where(x > 0.5, 3.0, x) ** 2), np.array([0.2, 0.9], np.float32), True),
    ("flip_0d", lambda x: S(np.sin(np.flip(S(x))) * 2.0), np.array([0.3, 0.4]), True),
    ("dot_zero_size", lambda x: S(np.dot(x[:, :0], np.ones((0, 2)))) + S(x), np.ones((2, 2)), True),
    ("matmul_zero_size_inner", lambda x: S(x[:0] @ np.ones(0)) + S(x * x), np.array([1.0, 2.0]), True),
    ("matmul_zero_size_out", lambda x: S(np.ones((0, 2)) @ x) + S(x), np.ones((2, 3)), True),
    ("inner_zero_size", lambda x: S(np.inner(x[:0], x[:0])) + S(x), np.array([1.0, 2.0]), True),
    ("norm_inf_empty", lambda x: S(np.linalg.norm(x[:, :0], ord=np.inf, axis=-1)) + S(x), np.ones((2, 2)), True),
    ("norm_inf", lambda x: np.linalg.norm(x, ord=np.inf), np.array([1.0, -3.0, 2.0]), True),
    ("norm_minus_inf_axis", lambda x: S(np.linalg.norm(x, ord=-np.inf, axis=-1)), np.array([[1.0, -3.0], [4.0, 2.0]]), True),
    ("zero_size_sum", lambda x: S(x[:0] * 2.0) + S(x), np.array([1.0, 2.0]), True),
    ("zero_d_input", lambda x: np.sin(x) * x, np.array(0.7), True),
    ("float32_chain", lambda x: S(np.tanh(x) * np.exp(x)), np.array([0.1, -0.5, 0.3], np.float32), True),
    ("noncontiguous", lambda x: S(np.exp(x.T[::-1, ::2]) * x.T[::-1, ::2]), np.arange(12.0).reshape(3, 4) / 10, True),
    ("negative_stride", lambda x: S(np.log1p(x[::-1] ** 2)), np.array([0.5, 1.5, -2.0]), True),
    ("prod_zero", lambda x: np.prod(x), np.array([2.0, 0.0, 3.0]), True),
    ("prod_two_zeros", lambda x: np.prod(x), np.array([0.0, 0.0, 3.0]), True),
    ("abs_at_zero", lambda x: S(np.abs(x)), np.array([0.0, -1.0]), False),
    ("maximum_tie", lambda x: S(np.maximum(x, 1.0)), np.array([1.0, 2.0]), False),
    ("log_of_zero_times_zero", lambda x: S(x * 0.0 + np.log(x + 1.0)), np.array([0.5, 0.0]), True),
    ("mean_empty_axis", lambda x: S(np.mean(x[:, :0], axis=0)) + S(x), np.ones((2, 2)), True),
]


def _close_same_nan(a, b, rtol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0 if rtol < 1e-9 else 1e-6, err_msg=what)


@pytest.mark.parametrize("name, f, x, smooth", CASES, ids=[c[0] for c in CASES])
def test_engines_agree(name, f, x, smooth):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gf = forward_gradient(f, x)
        gr = reverse_gradient(f, x)
        expected_primal = np.asarray(f(x))
        got_primal = primal(f, x)
        fd = central_difference(lambda v: float(f(v)), x.astype(np.float64)) if smooth else None
    rtol = 1e-12 if x.dtype == np.float64 else 1e-6
    _close_same_nan(gf, gr, rtol, f"{name}: forward vs reverse")
    assert gf.dtype == gr.dtype == x.dtype
    # the primal is NumPy's own (same dtype, same NaN positions); bit for bit except that a sum
    # over a non-contiguous view may differ in its last bits (the engines store results
    # contiguously, which changes NumPy's pairwise summation order): the documented tolerance
    assert got_primal.dtype == expected_primal.dtype, name
    np.testing.assert_array_equal(np.isnan(got_primal), np.isnan(expected_primal))
    eps = np.finfo(x.dtype).eps
    np.testing.assert_allclose(got_primal, expected_primal, rtol=8 * eps, atol=0)
    if "contiguous" not in name and "stride" not in name:
        np.testing.assert_array_equal(got_primal, expected_primal)
    if smooth:
        np.testing.assert_allclose(gf, fd, rtol=1e-5 if x.dtype == np.float64 else 2e-3,
                                   atol=1e-6 if x.dtype == np.float64 else 1e-3)


def test_documented_edge_values():
    # the values themselves, not only their agreement
    assert np.all(forward_gradient(lambda x: np.std(x), np.full(3, 2.0)) == 0)
    assert np.all(reverse_gradient(lambda x: np.linalg.norm(x), np.zeros(3)) == 0)
    np.testing.assert_array_equal(reverse_gradient(lambda x: np.max(x), np.array([1.0, np.nan, 2.0])),
                                  [0.0, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.all(np.isnan(forward_gradient(lambda x: np.var(x, ddof=3), np.array([1.0, 2.0, 4.0]))))
        assert np.all(np.isnan(reverse_gradient(lambda x: np.var(x, ddof=4), np.array([1.0, 2.0, 4.0]))))
    # a genuine infinite derivative is kept where the tangent is not zero
    g = reverse_gradient(lambda x: np.sum(np.sqrt(x)), np.array([0.0, 4.0]))
    assert g[0] == np.inf and g[1] == 0.25
    g = forward_gradient(lambda x: np.sum(np.sqrt(x)), np.array([0.0, 4.0]))
    assert g[0] == np.inf and g[1] == 0.25


# functions one engine supports and the other does not, by name, with the reason: none
ENGINE_EXCEPTIONS: dict[str, str] = {}


def test_both_engines_support_the_same_functions(monkeypatch):
    from gradtest import _rules
    from gradtest.forward import Dual
    from gradtest.reverse import Tape, Tracked

    assert ENGINE_EXCEPTIONS == {}
    # both engines dispatch every NumPy function and ufunc through the one registry: a rule
    # put there is reached from both, and a function without one is refused identically
    seen = []
    marker = lambda *args, **kwargs: seen.append(type(args[0]).__name__) or 1.0  # noqa: E731
    monkeypatch.setitem(_rules.FUNCTIONS, np.fft.fft, marker)
    monkeypatch.setitem(_rules.UFUNCS, (np.ldexp, "__call__"), marker)
    d = Dual(np.ones(2), np.eye(2))
    t = Tracked.leaf(Tape(), np.ones(2))
    for x in (d, t):
        assert np.fft.fft(x) == 1.0 and np.ldexp(x, 2) == 1.0
    assert seen == ["Dual", "Dual", "Tracked", "Tracked"]
    messages = []
    for x in (d, t):
        with pytest.raises(NotImplementedError) as info:
            np.fft.ifft(x)
        messages.append(str(info.value))
    assert messages[0].replace("forward", "reverse") == messages[1]
    assert "numpy.fft.ifft" in messages[0]
    # and neither engine keeps a table of its own
    from gradtest import forward, reverse
    for module in (forward, reverse):
        assert not hasattr(module, "_FUNCTION_RULES") and not hasattr(module, "_FUNCTIONS")


def test_linearized_primitive_on_linear_algebra():
    # the protocol coverage builds linalg on: y = value, dy = jvp(dx) with constant coefficients
    from gradtest import _primitives as P
    import gradtest

    def inv(a):
        ai = np.linalg.inv(P.value(a))
        return P.linearized(ai, [a], lambda da: -(ai @ da @ ai), "numpy.linalg.inv")

    def solve(a, b):
        av = P.value(a)
        x, ai = np.linalg.solve(av, P.value(b)), np.linalg.inv(av)
        return P.linearized(x, [a, b], lambda da, db: ai @ (db - da @ x), "numpy.linalg.solve")

    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    b = rng.standard_normal(3)
    f = lambda A, b: np.sum(np.sin(inv(A))) + np.sum(solve(A, b) ** 2)  # noqa: E731
    report = gradtest.check_gradients(f, A, b, backends=["forward", "reverse"])
    assert report.passed, report
    gf = gradtest.gradient(f, A, b, backend="forward")
    gr = gradtest.gradient(f, A, b, backend="reverse")
    for x, y in zip(gf, gr):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    # the primal is the given value, bit for bit
    value, _ = jvp(lambda A: inv(A), [A], [np.ones_like(A)])
    np.testing.assert_array_equal(value, np.linalg.inv(A))
    # no silent wrong second derivative
    from gradtest.reverse import hvp
    with pytest.raises(NotImplementedError, match="second order of numpy.linalg.inv"):
        hvp(lambda A: np.sum(inv(A)), (A,), (np.ones_like(A),))


LINEAR_MOVES = [
    ("roll", lambda x: np.roll(x, 1, axis=0)),
    ("rot90", lambda x: np.rot90(x)),
    ("fliplr", lambda x: np.fliplr(x)),
    ("flipud", lambda x: np.flipud(x)),
    ("tril", lambda x: np.tril(x, -1)),
    ("triu", lambda x: np.triu(x)),
    ("diag_matrix", lambda x: np.diag(x)),
    ("diag_vector", lambda x: np.diag(x[0], 1)),
    ("column_stack", lambda x: np.column_stack([x[0], np.ones(3), x[1]])),
    ("dstack", lambda x: np.dstack([x, 2.0 * x])),
]


@pytest.mark.parametrize("name, g", LINEAR_MOVES, ids=[m[0] for m in LINEAR_MOVES])
def test_moves_agree_with_finite_differences(name, g):
    x = np.arange(9.0).reshape(3, 3) / 7 + 0.1
    w = np.random.default_rng(0).standard_normal(np.shape(g(x)))
    f = lambda v: np.sum(w * g(v) * g(v))
    gf, gr = forward_gradient(f, x), reverse_gradient(f, x)
    np.testing.assert_allclose(gf, gr, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gf, central_difference(f, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(primal(lambda v: g(v), x), g(x))
