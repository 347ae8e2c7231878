"""Order 2: Hessian-vector products by reverse over reverse (gradtest.reverse.hvp) against central
differences of the reverse gradient, the check of jax's check_grads(order=2) and torch's
gradgradcheck; and the differentiable partials of the order-2 replay against the C op table."""

from __future__ import annotations

import numpy as np
import pytest

from gradtest import _core
from gradtest.reverse import _PARTIAL_EXPRESSIONS, _PIECEWISE, gradient_reverse, hvp

from test_reverse import BINARY, UNARY
from test_reverse_robust import random_program


def fd_hvp(f, args, vs, h=1e-5):
    """Central differences of the reverse gradient along v."""
    up = gradient_reverse(f, *[a + h * v for a, v in zip(args, vs)])
    down = gradient_reverse(f, *[a - h * v for a, v in zip(args, vs)])
    return [(u - d) / (2 * h) for u, d in zip(up, down)]


def check_hvp(f, *args, seed=0, rtol=1e-5, atol=1e-6, grad_rtol=1e-10, h=1e-5):
    rng = np.random.default_rng(seed)
    vs = [rng.standard_normal(np.shape(a)) for a in args]
    grads, hvs = hvp(f, args, tuple(vs))
    for g, r in zip(grads, gradient_reverse(f, *args)):  # the replay agrees with the C sweep
        np.testing.assert_allclose(g, r, rtol=grad_rtol, atol=grad_rtol * 1e-2)
    for i, (got, e) in enumerate(zip(hvs, fd_hvp(f, args, vs, h))):
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(got, e, rtol=rtol, atol=atol * scale, err_msg=f"argument {i}")


def test_partial_expressions_match_the_op_table():
    rng = np.random.default_rng(0)
    names = set(_PARTIAL_EXPRESSIONS) | (_PIECEWISE - {"absolute"})
    assert set(UNARY + BINARY) <= names, "an op of the table has no order-2 expression"
    for name, expr in _PARTIAL_EXPRESSIONS.items():
        if name not in UNARY + BINARY:
            continue
        lo, hi = (1.2, 2.0) if name == "arccosh" else (0.2, 0.9)
        a = rng.uniform(lo, hi, 7)
        b = rng.uniform(0.2, 0.9, 7)
        binary = name in BINARY
        y, *parts = _core.op_partials(name, a, b) if binary else _core.op_partials(name, a)
        got = expr(a, b if binary else None, y)
        if name == "power":  # d/db is only formed for a differentiated exponent
            got = (got[0], y * np.log(a))
        for p, q in zip(parts, got):
            np.testing.assert_allclose(np.broadcast_to(q, p.shape), p, rtol=1e-13, err_msg=name)


@pytest.mark.parametrize("name", UNARY)
def test_unary_hvp(name):
    ufunc = getattr(np, name)
    lo, hi = (1.2, 2.0) if name == "arccosh" else (0.2, 0.9)
    x = np.random.default_rng(1).uniform(lo, hi, 5)
    check_hvp(lambda x: np.sum(ufunc(x) * x), x)


@pytest.mark.parametrize("name", BINARY)
def test_binary_hvp_with_broadcasting(name):
    ufunc = getattr(np, name)
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.2, 0.9, (3, 1)), rng.uniform(0.2, 0.9, (4,))
    check_hvp(lambda a, b: np.sum(ufunc(a, b) * ufunc(b, a)), a, b)


CASES = {
    "reductions": lambda x: np.sum(np.mean(x, axis=0) ** 2) + np.prod(x[0]) + np.max(x * x, axis=1).sum(),
    "var_std": lambda x: np.var(x, axis=1).sum() * np.std(x),
    "cumulative": lambda x: np.sum(np.cumsum(x, axis=0) * np.cumprod(x, axis=1)),
    "gather": lambda x: np.sum(x[[0, 0, 2], ::-1] ** 3) + np.sum(np.where(x > 0.5, x * x, -x)),
    "concat_transpose": lambda x: np.sum(np.concatenate([x, x.T[:1] * x[:1]]) ** 2),
    "broadcast_to": lambda x: np.sum(np.sin(np.broadcast_to(x[:1], (4, 3)) * x)),
    "matmul": lambda x: np.sum(np.tanh(x @ x.T) @ x),
    "einsum_tensordot": lambda x: np.einsum("ij,jk->", x, x.T * x.T) + np.tensordot(x, x, 2) ** 2,
    "norm": lambda x: np.linalg.norm(x) * np.linalg.norm(x, 1),
    "float32_cast": lambda x: np.sum(np.exp(x.astype(np.float32)) * x),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_structural_hvp(name):
    x = np.random.default_rng(3).uniform(0.2, 0.9, (3, 3)) if name != "broadcast_to" else \
        np.random.default_rng(3).uniform(0.2, 0.9, (4, 3))
    rtol = 1e-3 if name == "float32_cast" else 1e-5
    atol = 1e-3 if name == "float32_cast" else 1e-6
    f32 = name == "float32_cast"  # float32 differences need a longer step
    check_hvp(CASES[name], x, rtol=rtol, atol=atol, grad_rtol=1e-6 if f32 else 1e-10,
              h=3e-2 if f32 else 1e-5)


def test_mlp_loss_hvp():
    rng = np.random.default_rng(4)
    w1, b1, w2 = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal((5, 2))
    x, t = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    check_hvp(lambda w1, b1, w2: np.mean((np.tanh(x @ w1 + b1) @ w2 - t) ** 2), w1, b1, w2)


@pytest.mark.parametrize("seed", range(15))
def test_random_programs_hvp(seed):
    f = random_program(seed)
    rng = np.random.default_rng(3000 + seed)
    check_hvp(f, rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, (4, 4)), seed=seed)


def test_hvp_of_a_function_independent_of_an_input():
    grads, hvs = hvp(lambda x, y: np.sum(x ** 3), (np.ones(2), np.ones(3)), (np.ones(2), np.ones(3)))
    np.testing.assert_allclose(hvs[0], [6.0, 6.0])
    np.testing.assert_array_equal(hvs[1], np.zeros(3))
    grads, hvs = hvp(lambda x: 2.0, (np.ones(2),), (np.ones(2),))
    np.testing.assert_array_equal(hvs[0], np.zeros(2))


def test_hvp_limits_and_errors():
    # prod is a tree of multiplies (gradtest._rules), so its second order is exact at a zero
    _, (h,) = hvp(lambda x: np.prod(x), (np.array([1.0, 0.0, 2.0]),), (np.ones(3),))
    np.testing.assert_array_equal(h, [2.0, 3.0, 1.0])
    with pytest.raises(ValueError, match="tangents"):
        hvp(lambda x: np.sum(x), (np.ones(2),), (np.ones(3),))
    with pytest.raises(ValueError, match="scalar"):
        hvp(lambda x: x * 2, (np.ones(2),), (np.ones(2),))


def test_compute_hvp_on_a_gradient_problem():
    from gradtest._problem import GradientProblem, describe_output
    from gradtest._tree import flatten_args
    from gradtest.reverse import compute_hvp

    rng = np.random.default_rng(5)
    x = rng.uniform(0.2, 0.9, (3, 2))
    w = rng.uniform(0.2, 0.9, 2)

    def f(x, w):
        return np.tanh(x * w) @ w  # an array output: the problem checks <u, f(x, w)>

    problem = GradientProblem(f, {}, flatten_args((x, w)), describe_output(f(x, w), rng))
    u = problem.output.cotangents[0]
    vs = [rng.standard_normal(x.shape), rng.standard_normal(w.shape)]
    grads, hvs = compute_hvp(problem, vs)
    s = lambda x, w: np.sum(f(x, w) * u)  # noqa: E731
    for g, r in zip(grads, gradient_reverse(s, x, w)):
        np.testing.assert_allclose(g, r, rtol=1e-12)
    for h, e in zip(hvs, fd_hvp(s, (x, w), vs)):
        np.testing.assert_allclose(h, e, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="tangents"):
        compute_hvp(problem, vs[:1])
