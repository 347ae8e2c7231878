"""Order 2: Hessian-vector products by reverse over reverse (gradtest.reverse.hvp: the tape records
its own backward sweep in C, Tape.backward_graph) against central differences of the reverse
gradient, the check of jax's check_grads(order=2) and torch's gradgradcheck; exact values at the
kinks and zeros the op table's conventions define; and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from gradtest import _reverse
from gradtest.reverse import Tracked, gradient_reverse, hvp

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


def test_every_op_of_the_table_is_covered():
    names = set(_reverse.op_indices())
    assert names == set(UNARY + BINARY) | {"sign"}, "an op of the table has no order-2 test"


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
    "reshape_squeeze": lambda x: np.sum(np.reshape(x, (9, 1)).squeeze() ** 3 * np.ravel(x[::-1])),
    "cumsum_last_axis": lambda x: np.sum(np.cumsum(x * x, axis=-1) * x),
    "batched_matmul": lambda x: np.sum(np.sin(np.stack([x, x * x]) @ x) ** 2),
    "matvec_vecmat": lambda x: np.sum((x @ x[0]) ** 2) + np.sum((x[1] @ x) ** 3),
    "broadcast_unbroadcast": lambda x: np.sum(np.exp(x[:, :1] * x[None, 0] + x.sum(axis=0))),
    "sum_of_leaf_and_scalar": lambda x: np.sum(x) * np.sum(x) + np.sum(x[0, 0] * x),
    "prod_cumprod_axes": lambda x: np.sum(np.prod(x, axis=0) ** 2) + np.sum(np.cumprod(x, axis=0) * x),
    "where_and_extremes": lambda x: np.sum(np.where(x > 0.5, x ** 3, np.maximum(x, 0.4) ** 2)),
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


def test_float32_hvp_of_a_smooth_function():
    x = np.random.default_rng(6).uniform(0.2, 0.9, 5).astype(np.float32)
    v = np.random.default_rng(7).standard_normal(5)
    (g,), (hv,) = hvp(lambda x: np.sum(np.sin(x) * x ** 2), (x,), (v,))
    xd = x.astype(np.float64)
    h = (2 - xd * xd) * np.sin(xd) + 4 * xd * np.cos(xd)  # the diagonal Hessian
    np.testing.assert_allclose(hv, h * v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, np.cos(xd) * xd ** 2 + 2 * xd * np.sin(xd), rtol=1e-5)


def test_prod_and_cumprod_at_zero():
    # prod(x) with x = (2, 0, 3): H[i, j] = prod of the others but i and j
    x = np.array([2.0, 0.0, 3.0])
    H = np.array([[0.0, 3.0, 0.0], [3.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    for v in np.eye(3):
        (g,), (hv,) = hvp(lambda x: np.prod(x), (x,), (v,))
        np.testing.assert_array_equal(g, [0.0, 6.0, 0.0])
        np.testing.assert_allclose(hv, H @ v, rtol=1e-15)
    # two zeros: the gradient is 0 but the Hessian is not
    (g,), (hv,) = hvp(lambda x: np.prod(x), (np.array([0.0, 0.0, 5.0]),), (np.array([0.0, 1.0, 0.0]),))
    np.testing.assert_array_equal(g, np.zeros(3))
    np.testing.assert_allclose(hv, [5.0, 0.0, 0.0])
    # sum(cumprod(x)) = x0 + x0 x1 + x0 x1 x2 at x = (1, 0, 2): H = [[0,1+2,0],[3,0,1],[0,1,0]]
    x = np.array([1.0, 0.0, 2.0])
    Hc = np.array([[0.0, 3.0, 0.0], [3.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    for v in np.eye(3):
        (g,), (hv,) = hvp(lambda x: np.sum(np.cumprod(x)), (x,), (v,))
        np.testing.assert_allclose(g, [1.0, 3.0, 0.0])
        np.testing.assert_allclose(hv, Hc @ v)
    check_hvp(lambda x: np.sum(np.prod(x, axis=1) * np.cumprod(x, axis=1)[:, -1]),
              np.array([[0.5, 0.0, 1.5], [0.7, 0.2, 0.0]]))


def test_check_gradients_order_2_at_zeros_of_prod():
    import gradtest

    f = lambda x: np.prod(x) + np.sum(np.cumprod(x[::-1]) * x)  # noqa: E731
    report = gradtest.check_gradients(f, np.array([2.0, 0.0, 3.0, 0.5]), order=2)
    assert report.outcomes["reverse:hvp"].status == "pass", report


def test_zero_d_programs():
    # a tape of 0-d nodes only (no shape storage): sum, prod and a product of scalars
    x = np.array(0.7)
    (g,), (hv,) = hvp(lambda x: np.sum(np.sin(x) * x) + np.prod(x) ** 3, (x,), (np.array(2.0),))
    h = 2 * np.cos(0.7) - 0.7 * np.sin(0.7) + 6 * 0.7
    np.testing.assert_allclose(hv, 2.0 * h, rtol=1e-13)


def test_power_at_zero():
    v = np.array([1.0, -2.0])
    _, (hv,) = hvp(lambda x: np.sum(x ** 2), (np.zeros(2),), (v,))
    np.testing.assert_array_equal(hv, 2 * v)
    _, (hv,) = hvp(lambda x: np.sum(x ** 3), (np.zeros(2),), (v,))
    np.testing.assert_array_equal(hv, [0.0, 0.0])
    _, (hv,) = hvp(lambda x: np.sum(x ** 1.0 * x), (np.zeros(2),), (v,))  # no 0 * inf
    np.testing.assert_array_equal(hv, 2 * v)
    # a differentiated exponent at a == 0: d/db and its derivatives are 0 there (ops.h)
    _, (ha, hb) = hvp(lambda a, b: np.sum(a ** b), (np.zeros(2), np.array([2.0, 3.0])),
                      (np.ones(2), np.ones(2)))
    np.testing.assert_array_equal(ha, [2.0, 0.0])
    np.testing.assert_array_equal(hb, [0.0, 0.0])
    assert np.all(np.isfinite(ha)) and np.all(np.isfinite(hb))


def test_abs_and_max_ties():
    # |x| x has derivative 2|x| and second derivative 2 sign(x), 0 at the kink (abs'(0) = 0)
    x = np.array([-0.5, 0.0, 0.5])
    _, (hv,) = hvp(lambda x: np.sum(np.abs(x) * x), (x,), (np.ones(3),))
    np.testing.assert_array_equal(hv, [-2.0, 0.0, 2.0])
    # maximum at a tie splits 0.5/0.5, and the split is locally constant: for m = max(a, b),
    # d(m^2)/da = m, so H v = 0.5 (va + vb) in both blocks
    a, b = np.array([1.0, 2.0]), np.array([1.0, 1.0])
    _, (ha, hb) = hvp(lambda a, b: np.sum(np.maximum(a, b) ** 2), (a, b), (np.ones(2), np.ones(2)))
    np.testing.assert_array_equal(ha, [1.0, 2.0])
    np.testing.assert_array_equal(hb, [1.0, 0.0])
    # np.max with ties: the weights split evenly and are locally constant
    _, (hv,) = hvp(lambda x: np.max(x) ** 2, (np.array([3.0, 3.0, 1.0]),), (np.array([1.0, 0.0, 0.0]),))
    np.testing.assert_array_equal(hv, [0.5, 0.5, 0.0])


def test_order2_of_an_unsupported_node_is_refused():
    # a cumulative-product node (the tape's first-order kind; numpy.cumprod itself is a scan of
    # multiplies): its backward sweep cannot be recorded, and the refusal is an error, never a
    # silent number
    def f(x):
        y = np.cumprod(x.value)
        node = x.tape.cumulative("prod", x.node, np.ascontiguousarray(x.value), y)
        return np.sum(Tracked(y, x.tape, node))

    with pytest.raises(NotImplementedError, match="order 2"):
        hvp(f, (np.array([1.0, 2.0]),), (np.ones(2),))
    with pytest.raises(NotImplementedError, match="numpy.fft.fft"):
        hvp(lambda x: np.sum(np.fft.fft(x).real), (np.ones(2),), (np.ones(2),))


def test_backward_graph_on_the_tape():
    tape = _reverse.Tape()
    try:
        x = Tracked.leaf(tape, np.array([1.0, 2.0]))
        y = np.sum(np.exp(x) * x)
        n = len(tape)
        (entry,) = tape.backward_graph(y.node, np.ones(()), [x.node])
        assert len(tape) > n  # the sweep is nodes on the tape
        gid, gval = entry
        np.testing.assert_allclose(gval, np.exp(x.value) * (1 + x.value))
        tape.backward(gid, np.array([1.0, 0.0]))  # d/dx of the first gradient entry
        np.testing.assert_allclose(tape.adjoint(x.node), [np.e * 3, 0.0])
        with pytest.raises(ValueError, match="seed"):
            tape.backward_graph(y.node, np.ones(2), [x.node])
        other = Tracked.leaf(tape, np.ones(1))
        assert tape.backward_graph(y.node, np.ones(()), [other.node]) == [None]
    finally:
        tape.release()


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
