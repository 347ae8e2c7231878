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
    # an f that differentiates on the tape itself (a recorded gradient): the Hessian-vector
    # product would be a third order, whose sweep the tape cannot record; the refusal is an
    # error, never a silent number
    def f(x):
        y = np.sum(np.exp(x) * x)
        ((node, value),) = x.tape.backward_graph(y.node, np.ones(()), [x.node])
        return np.sum(Tracked(value, x.tape, node) ** 2)

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


# ---- rules whose derivative is computed from values: the trapezoid form of order 2 -----------
# (reverse.py, above _ReverseEngine). H v against central differences of the first-order reverse
# gradient, on well-conditioned random inputs.

def _spd(n, seed):
    a = np.random.default_rng(seed).standard_normal((n, n))
    return a @ a.T + n * np.eye(n)


def _mat(m, n, seed):
    return np.random.default_rng(seed).standard_normal((m, n))


la = np.linalg
LINALG = {
    "solve": (lambda a, b: np.sum(np.sin(la.solve(a, b))), lambda: (_spd(4, 1), _mat(4, 2, 2))),
    "solve_vector": (lambda a, b: np.sum(la.solve(a, b) ** 2), lambda: (_spd(3, 3), _mat(3, 1, 4)[:, 0])),
    "inv": (lambda a: np.sum(la.inv(a) ** 3), lambda: (_spd(3, 5) + _mat(3, 3, 6),)),
    "det": (lambda a: la.det(a) ** 2, lambda: (_mat(3, 3, 7) + 3 * np.eye(3),)),
    "slogdet": (lambda a: la.slogdet(a)[1] * np.sum(a), lambda: (_spd(3, 8),)),
    "cholesky": (lambda a: np.sum(la.cholesky(a) ** 3), lambda: (_spd(4, 9),)),
    "cholesky_upper": (lambda a: np.sum(np.sin(la.cholesky(a, upper=True))), lambda: (_spd(3, 10),)),
    "eigh": (lambda a: np.sum(la.eigh(a)[0] ** 3) + np.sum(la.eigh(a)[1][:, 1:] ** 4),
             lambda: (_spd(4, 11),)),
    "eigvalsh": (lambda a: np.sum(np.exp(la.eigvalsh(a, UPLO="U") / 4)), lambda: (_spd(4, 12),)),
    "svd": (lambda a: np.sum(la.svd(a, full_matrices=False)[0] ** 3) + np.sum(la.svd(a, False)[1] ** 3)
            + np.sum(la.svd(a, full_matrices=False)[2] ** 3), lambda: (_mat(4, 3, 13),)),
    "svd_values": (lambda a: np.sum(la.svd(a, compute_uv=False) ** 3), lambda: (_mat(3, 4, 14),)),
    "svdvals": (lambda a: np.sum(np.log(la.svdvals(a))), lambda: (_mat(3, 3, 15),)),
    "qr": (lambda a: np.sum(la.qr(a)[0] ** 3) + np.sum(la.qr(a)[1] ** 3), lambda: (_mat(4, 3, 16),)),
    "qr_r": (lambda a: np.sum(la.qr(a, mode="r") ** 2 * a[:3]), lambda: (_mat(4, 3, 17),)),
    "eig": (lambda a: np.sum(la.eig(a)[0] ** 3) + np.sum(la.eig(a)[1] ** 4),
            lambda: (_spd(3, 18) + 0.1 * _mat(3, 3, 19),)),
    "eigvals": (lambda a: np.sum(la.eigvals(a) ** 3), lambda: (_spd(3, 20) + 0.1 * _mat(3, 3, 21),)),
    "pinv": (lambda a: np.sum(la.pinv(a) ** 3), lambda: (_mat(4, 2, 22),)),
    "lstsq": (lambda a, b: np.sum(la.lstsq(a, b)[0] ** 3), lambda: (_mat(5, 3, 23), _mat(5, 2, 24))),
    "norm_nuc_2": (lambda a: la.norm(a, "nuc") ** 2 + la.norm(a, 2) * la.norm(a, -2),
                   lambda: (_mat(3, 4, 25),)),
    "matrix_norm_vector_norm": (lambda a: la.matrix_norm(a, ord="nuc") * la.vector_norm(a, ord=3),
                                lambda: (_mat(3, 3, 26),)),
    "cond": (lambda a: la.cond(a) ** 2, lambda: (_mat(3, 3, 27) + 2 * np.eye(3),)),
    "matrix_power": (lambda a: np.sum(la.matrix_power(a, 3)) + np.sum(la.matrix_power(a, -2)),
                     lambda: (_spd(3, 28) / 3,)),
    "multi_dot": (lambda a, b: np.sum(np.tanh(la.multi_dot([a, b, a.T]))),
                  lambda: (_mat(3, 2, 29), _mat(2, 2, 30))),
    "tensorinv": (lambda a: np.sum(la.tensorinv(a, ind=2) ** 3),
                  lambda: ((_spd(4, 31) + _mat(4, 4, 32)).reshape(2, 2, 4),)),
    "tensorsolve": (lambda a, b: np.sum(la.tensorsolve(a, b) ** 3),
                    lambda: ((_spd(4, 33) + _mat(4, 4, 34)).reshape(2, 2, 4), _mat(2, 2, 35))),
    "batched_solve_det": (lambda a: np.sum(la.solve(a, a[..., :1]) ** 2) + np.sum(la.det(a)),
                          lambda: (np.stack([_spd(3, 36), _spd(3, 37)]),)),
}


def test_every_numpy_linalg_rule_has_an_order2_case():
    from gradtest._rules import FUNCTIONS

    registered = {f.__name__ for f in FUNCTIONS if getattr(f, "__module__", "") == "numpy.linalg"}
    # the functions each case calls (beyond its name)
    extra = {"solve_vector": {"solve"}, "cholesky_upper": {"cholesky"}, "svd_values": {"svd"},
             "qr_r": {"qr"}, "norm_nuc_2": {"norm"}, "matrix_norm_vector_norm": {"matrix_norm", "vector_norm"},
             "batched_solve_det": {"solve", "det"}}
    covered = set().union(*({name} | extra.get(name, set()) for name in LINALG))
    assert registered <= covered, registered - covered


@pytest.mark.parametrize("name", sorted(LINALG))
def test_numpy_linalg_hvp(name):
    f, make = LINALG[name]
    check_hvp(f, *make(), seed=len(name), rtol=1e-5, atol=1e-6, grad_rtol=1e-9)


def _scipy_linalg_cases():
    import scipy.linalg as sl

    return {
        "expm": (lambda a: np.sum(sl.expm(a) ** 2), lambda: (0.4 * _mat(3, 3, 40),)),
        "expm_squarings": (lambda a: np.sum(np.sin(sl.expm(a))), lambda: (2.0 * _mat(3, 3, 41),)),
        "sqrtm": (lambda a: np.sum(sl.sqrtm(a) ** 3), lambda: (_spd(3, 42),)),
        "solve_sylvester": (lambda a, b, q: np.sum(sl.solve_sylvester(a, b, q) ** 2),
                            lambda: (_spd(3, 43), _spd(2, 44), _mat(3, 2, 45))),
        "solve_triangular": (lambda a, b: np.sum(sl.solve_triangular(a, b, lower=True) ** 3),
                             lambda: (np.tril(_mat(3, 3, 46)) + 3 * np.eye(3), _mat(3, 2, 47))),
        "cholesky_cho_solve": (lambda a, b: np.sum(sl.cho_solve((sl.cholesky(a), False), b) ** 3),
                               lambda: (_spd(3, 48), _mat(3, 2, 49))),
        "inv_det_solve": (lambda a: np.sum(sl.inv(a) ** 3) + sl.det(a) ** 2 + np.sum(sl.solve(a, a[:, 0]) ** 3),
                          lambda: (_spd(3, 50) + _mat(3, 3, 51),)),
        "eigh": (lambda a: np.sum(sl.eigh(a)[0] ** 3) + np.sum(sl.eigh(a)[1] ** 4), lambda: (_spd(3, 52),)),
        "svd_qr": (lambda a: np.sum(sl.svd(a, full_matrices=False)[0] ** 3) + np.sum(sl.qr(a, mode="economic")[1] ** 3),
                   lambda: (_mat(4, 3, 53),)),
        "lu_cho_norm": (lambda a, b: np.sum(sl.lu_solve(sl.lu_factor(a), b) ** 3) + np.sum(sl.lu_factor(a)[0] ** 3)
                        + np.sum(sl.cho_solve(sl.cho_factor(a @ a.T, lower=True), b) ** 2) + sl.norm(a) ** 3,
                        lambda: (_spd(3, 54) + _mat(3, 3, 55), _mat(3, 2, 56))),
    }


def test_every_scipy_linalg_rule_has_an_order2_case():
    pytest.importorskip("scipy.linalg")
    from gradtest._rules_special import _MODULE_KINKS

    names = {k.split(".")[-1] for k in _MODULE_KINKS if k.startswith("scipy.linalg.")}
    covers = {"expm": {"expm"}, "sqrtm": {"sqrtm"}, "solve_sylvester": {"solve_sylvester"},
              "solve_triangular": {"solve_triangular"}, "cholesky_cho_solve": {"cholesky", "cho_solve"},
              "inv_det_solve": {"inv", "det", "solve"}, "eigh": {"eigh"}, "svd_qr": {"svd", "qr"},
              "lu_cho_norm": {"lu_factor", "lu_solve", "cho_factor", "norm"}}
    assert set(covers) <= set(_scipy_linalg_cases())
    assert names <= set().union(*covers.values()), names - set().union(*covers.values())


@pytest.mark.parametrize("name", ["expm", "expm_squarings", "sqrtm", "solve_sylvester",
                                  "solve_triangular", "cholesky_cho_solve", "inv_det_solve",
                                  "eigh", "svd_qr", "lu_cho_norm"])
def test_scipy_linalg_hvp(name):
    pytest.importorskip("scipy.linalg")
    f, make = _scipy_linalg_cases()[name]
    check_hvp(f, *make(), seed=len(name), rtol=1e-5, atol=1e-6, grad_rtol=1e-9)


def _special_cases():
    import scipy.special as sc

    rng = np.random.default_rng(60)
    pos = lambda *shape: rng.uniform(0.5, 2.5, shape)  # noqa: E731
    return {
        "beta": (lambda a, b: np.sum(sc.beta(a, b) ** 2), (pos(4), pos(4))),
        "betaln": (lambda a, b: np.sum(np.sin(sc.betaln(a, b))), (pos(3, 1), pos(4))),
        "xlogy": (lambda x, y: np.sum(sc.xlogy(x, y) ** 2), (pos(4), pos(4))),
        "xlog1py": (lambda x, y: np.sum(sc.xlog1py(x, y) ** 2), (pos(4), pos(4))),
        "rel_entr": (lambda x, y: np.sum(sc.rel_entr(x, y) ** 2), (pos(4), pos(4))),
        "kl_div": (lambda x, y: np.sum(sc.kl_div(x, y) * x), (pos(4), pos(4))),
        "xlogy_constant_x": (lambda y: np.sum(sc.xlogy(np.array([0.0, 1.0, 2.0]), y) ** 2), (pos(3),)),
        "i0e_i1e": (lambda x: np.sum(sc.i0e(x) * sc.i1e(x)), (pos(4),)),
        "ive_kve": (lambda x: np.sum(sc.ive(1.5, x) ** 2 + sc.kve(0.5, x) * x), (pos(4),)),
        "numpy_i0": (lambda x: np.sum(np.i0(x) ** 2), (pos(4),)),
        "zero_d": (lambda a, b: sc.betaln(a[0], b[0]) ** 3, (np.array([1.3]), np.array([0.7]))),
        "nested": (lambda a, b: np.sum(sc.beta(sc.xlogy(a, b) + 2.0, b)), (pos(3), pos(3))),
    }


@pytest.mark.parametrize("name", ["beta", "betaln", "xlogy", "xlog1py", "rel_entr", "kl_div",
                                  "xlogy_constant_x", "i0e_i1e", "ive_kve", "numpy_i0", "zero_d",
                                  "nested"])
def test_special_functions_of_values_hvp(name):
    pytest.importorskip("scipy.special")
    f, args = _special_cases()[name]
    check_hvp(f, *args, seed=len(name), rtol=1e-5, atol=1e-6, grad_rtol=1e-9)


def test_scipy_stats_hvp():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(70)
    x, loc, scale = rng.standard_normal(4), np.array([0.3]), np.array([1.4])
    check_hvp(lambda x, loc, scale: np.sum(stats.norm.logpdf(x, loc, scale)), x, loc, scale)
    z, a, b = rng.uniform(0.2, 0.8, 4), rng.uniform(1.5, 3, 4), rng.uniform(1.5, 3, 4)
    check_hvp(lambda z, a, b: np.sum(stats.beta.logpdf(z, a, b)), z, a, b, grad_rtol=1e-9)
    check_hvp(lambda z, a: np.sum(stats.gamma.logpdf(z + 1, a)), z, a, grad_rtol=1e-9)
    cov = _spd(3, 71)
    check_hvp(lambda x, m, c: np.sum(stats.multivariate_normal.logpdf(x, m, c)),
              rng.standard_normal((2, 3)), rng.standard_normal(3), cov, grad_rtol=1e-9)


def test_xlogy_at_x_zero_keeps_the_mixed_partial():
    # xlogy(0, y) = 0 for every y, but d2/dxdy (x log y) = 1/y there as everywhere
    sc = pytest.importorskip("scipy.special")
    x, y = np.array([0.0, 1.0]), np.array([2.0, 4.0])
    (gx, gy), (hx, hy) = hvp(lambda x, y: np.sum(sc.xlogy(x, y)), (x, y), (np.array([1.0, 0.0]), np.zeros(2)))
    np.testing.assert_allclose(gx, np.log(y))
    np.testing.assert_array_equal(gy, [0.0, 0.25])
    np.testing.assert_array_equal(hx, [0.0, 0.0])
    np.testing.assert_allclose(hy, [0.5, 0.0], rtol=1e-15)
    # and where y is 0 too, the value and the y-partial are 0 (no NaN)
    (gx, gy), _ = hvp(lambda x, y: np.sum(sc.xlogy(x, y)), (np.zeros(1), np.zeros(1)), (np.ones(1), np.ones(1)))
    np.testing.assert_array_equal(gy, [0.0])


def test_repeated_eigenvalues_at_order_2_are_not_silent():
    # the eigenvectors of a matrix with a repeated eigenvalue have no derivative: H v comes out
    # NaN there (documented in _rules_linalg), never a finite number
    a = np.diag([1.0, 1.0, 2.0])
    _, (hv,) = hvp(lambda a: np.sum(np.linalg.eigh(a)[1] ** 3), (a,), (np.ones((3, 3)),))
    assert not np.all(np.isfinite(hv))
    import gradtest
    report = gradtest.check_gradients(lambda a: np.sum(np.linalg.eigh(a)[1] ** 3), a, order=2,
                                      backends=["reverse"])
    assert report.outcomes["reverse:hvp"].status != "pass"


def test_a_value_computed_rule_without_partials_of_is_refused_at_order_2():
    from gradtest import _primitives as P

    def cube(x):  # partials from values, no partials_of: first order only
        v = P.value(x)
        return P.pointwise(v ** 3, [x], [3 * v ** 2], "my.cube")

    x = np.array([0.5, 2.0])
    np.testing.assert_allclose(gradient_reverse(lambda x: np.sum(cube(x)), x)[0], 3 * x ** 2)
    with pytest.raises(NotImplementedError, match="second order of my.cube"):
        hvp(lambda x: np.sum(cube(x)), (x,), (np.ones(2),))
    # with partials_of it is exact
    def cube2(x):
        v = P.value(x)
        return P.pointwise(v ** 3, [x], [3 * v ** 2], "my.cube", partials_of=lambda t: [3 * t ** 2])

    _, (hv,) = hvp(lambda x: np.sum(cube2(x)), (x,), (np.array([1.0, -1.0]),))
    np.testing.assert_allclose(hv, 6 * x * [1.0, -1.0], rtol=1e-15)


def test_records_second_order_says_where_a_second_derivative_is_read():
    from gradtest import _primitives as P
    from gradtest import reverse
    from gradtest.forward import jvp

    seen = []

    def probe(x):
        seen.append(P.records_second_order([x]))
        with reverse._first_order():
            seen.append(P.records_second_order([x]))
        return np.sum(x * x)

    x = np.array([1.0, 2.0])
    gradient_reverse(probe, x)
    hvp(probe, (x,), (np.ones(2),))
    jvp(probe, [x], [np.ones(2)])
    assert seen == [False, False, True, False, False, False]
    assert P.records_second_order([x]) is False  # no engine array


def test_value_computed_rules_with_a_constant_input_hvp():
    sl = pytest.importorskip("scipy.linalg")
    sc = pytest.importorskip("scipy.special")
    S, B = _spd(3, 80), _mat(3, 2, 81)
    check_hvp(lambda b: np.sum(np.linalg.solve(S, b) ** 3), B)
    check_hvp(lambda a: np.sum(np.linalg.solve(a, B) ** 3), S)
    check_hvp(lambda a, q: np.sum(sl.solve_sylvester(a, S, q) ** 2), S, _mat(3, 3, 82))
    check_hvp(lambda y: np.sum(sc.betaln(2.0, y) ** 2), np.array([1.5, 2.5]))
    # float32 factorizations: the trapezoid terms are cast back to float32
    check_hvp(lambda x: np.sum(np.linalg.eigh(x.astype(np.float32))[0].astype(np.float64) ** 3), S,
              rtol=1e-2, atol=1e-2, grad_rtol=1e-5, h=1e-2)
