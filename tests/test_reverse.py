"""Reverse mode: every op's VJP against finite differences, broadcasting in every argument position,
repeated indices, float32, 0-d, non-contiguous and transposed inputs, and the backend's API."""

from __future__ import annotations

import numpy as np
import pytest

import gradtest
from gradtest import Tracked, vjp
from gradtest import _core, _reverse
from gradtest.reverse import gradient_reverse


def check(f, *args, **kw) -> None:
    """The reverse backend passes check_gradients against the finite-difference ground truth."""
    report = gradtest.check_gradients(f, *args, backends=["reverse"], **kw)
    assert report.passed, str(report)
    assert report.outcomes["reverse"].status == "pass", str(report)


def rand(rng, *shape, lo=0.2, hi=0.9, dtype=np.float64):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


OP_TABLE = _reverse.op_indices()
# every op of the shared table, read from the table itself so that new entries are tested too
UNARY = [op["name"] for op in _core.op_table() if op["arity"] == 1]
BINARY = [op["name"] for op in _core.op_table() if op["arity"] == 2]
# shapes of (a, b): same, broadcast in a, broadcast in b, both, a 0-d, b a Python scalar
BROADCASTS = [((3, 4), (3, 4)), ((1, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)),
              ((), (2, 3)), ((2, 3), None)]


def test_op_lists_cover_the_table():
    assert sorted(UNARY + BINARY) == sorted(OP_TABLE)
    assert {"sin", "arccosh", "hypot", "fmin"} <= set(OP_TABLE)


@pytest.mark.parametrize("name", UNARY)
def test_unary_op_vjp(name, rng):
    ufunc = getattr(np, name)
    lo, hi = (1.2, 2.0) if name == "arccosh" else (0.2, 0.9)
    check(lambda x: ufunc(x), rand(rng, 3, 4, lo=lo, hi=hi))
    check(lambda x: ufunc(x), rand(rng, lo=lo, hi=hi))  # 0-d


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_binary_op_vjp_with_broadcasting(name, shapes, rng):
    ufunc = getattr(np, name)
    sa, sb = shapes
    a = rand(rng, *sa)
    if sb is None:
        check(lambda a: ufunc(a, 0.55), a)
        check(lambda a: ufunc(0.55, a), a)
        return
    b = rand(rng, *sb)
    check(lambda a, b: ufunc(a, b), a, b)
    check(lambda a, b: ufunc(b, a), a, b)


@pytest.mark.parametrize("name", ["sin", "exp", "sqrt", "tanh", "log1p"])
def test_float32_matches_float64(name, rng):
    ufunc = getattr(np, name)
    x = rand(rng, 5)
    f = lambda x: np.sum(ufunc(x) * ufunc(x))  # noqa: E731
    g64 = gradient_reverse(f, x)[0]
    g32 = gradient_reverse(f, x.astype(np.float32))[0]
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=2e-5)


@pytest.mark.parametrize("name", UNARY + BINARY)
def test_every_op_in_float32_against_float64(name, rng):
    ufunc = getattr(np, name)
    lo, hi = (1.2, 2.0) if name == "arccosh" else (0.2, 0.9)
    a32 = rand(rng, 3, 4, lo=lo, hi=hi, dtype=np.float32)
    b32 = rand(rng, 4, dtype=np.float32)[::-1]  # broadcast and non-contiguous
    if name in UNARY:
        f = lambda a, b: np.sum(ufunc(a) * b)  # noqa: E731
    else:
        f = lambda a, b: np.sum(ufunc(a, b) * ufunc(b, a))  # noqa: E731
    g32 = gradient_reverse(f, a32, b32)
    g64 = gradient_reverse(f, a32.astype(np.float64), b32.astype(np.float64))
    for x, y in zip(g32, g64):
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-5)


def test_mixed_precision_casts_on_the_tape(rng):
    x32 = rand(rng, 4, dtype=np.float32)
    w64 = rand(rng, 4)
    g = gradient_reverse(lambda x: np.sum(np.sin(x * w64)), x32)[0]
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.cos(x32.astype(np.float64) * w64) * w64, rtol=1e-6)


def test_non_contiguous_and_transposed_inputs(rng):
    a = rand(rng, 4, 6)[:, ::2]         # strided
    b = np.asfortranarray(rand(rng, 3, 5))
    check(lambda a, b: np.exp(a) @ np.sin(b).T[:3, :], a, b)
    check(lambda a: np.tanh(a.T) * a.T, a)


@pytest.mark.parametrize("p", [2, 3.0, -1.5, 0.5])
def test_power_with_scalar_exponents(p, rng):
    check(lambda x: x ** p, rand(rng, 5))
    check(lambda x: abs(p) ** x, rand(rng, 5))


def test_kinks_follow_the_op_table():
    g = gradient_reverse(lambda x: np.sum(np.abs(x)), np.array([0.0, -2.0, 3.0]))[0]
    np.testing.assert_array_equal(g, [0.0, -1.0, 1.0])
    g = gradient_reverse(lambda x, y: np.sum(np.maximum(x, y)), np.array([1.0, 2.0]),
                         np.array([1.0, 3.0]))
    np.testing.assert_array_equal(g[0], [0.5, 0.0])
    np.testing.assert_array_equal(g[1], [0.5, 1.0])
    g = gradient_reverse(lambda x: np.sum(np.sign(x) * 3.0), np.array([1.0, -2.0]))[0]
    np.testing.assert_array_equal(g, [0.0, 0.0])


# ---------------------------------------------------------------- reductions

@pytest.mark.parametrize("fn", [np.sum, np.mean, np.prod, np.max, np.min, np.var, np.std],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(fn, axis, keepdims, rng):
    check(lambda x: fn(x, axis=axis, keepdims=keepdims), rand(rng, 2, 3, 4))


def test_reduction_methods_and_ddof(rng):
    x = rand(rng, 3, 4)
    check(lambda x: x.sum(axis=1) + x.mean(0).sum() + x.prod() + x.max(axis=0).sum(), x)
    check(lambda x: np.var(x, axis=0, ddof=1) + np.std(x, ddof=1), x)
    check(lambda x: np.add.reduce(x, axis=1) * np.multiply.reduce(x, axis=1), x)


def test_prod_with_zeros_is_exact():
    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0]])
    g = gradient_reverse(lambda x: np.sum(np.prod(x, axis=1) * np.array([1.0, 1.0])), x)[0]
    np.testing.assert_array_equal(g, [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0]])


def test_max_ties_split_evenly():
    g = gradient_reverse(lambda x: np.max(x), np.array([1.0, 4.0, 4.0, 4.0, 2.0]))[0]
    np.testing.assert_allclose(g, [0, 1 / 3, 1 / 3, 1 / 3, 0])


@pytest.mark.parametrize("fn", [np.cumsum, np.cumprod], ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", [None, 0, 1, -1], ids=str)
def test_cumulative(fn, axis, rng):
    check(lambda x: fn(x, axis=axis), rand(rng, 3, 4))


def test_cumprod_with_zeros_is_exact():
    x = np.array([2.0, 0.0, 3.0, 0.5])
    u = np.array([1.0, 2.0, 3.0, 4.0])
    f = lambda x: np.sum(np.cumprod(x) * u)  # noqa: E731
    g = gradient_reverse(f, x)[0]
    # f = 2u0 + 0 ... : df/dx0 = u0 + u1*x1 + ..., computed by hand
    expected = [u[0] + u[1] * 0.0, u[1] * 2 + u[2] * 2 * 3 + u[3] * 2 * 3 * 0.5, 0.0, 0.0]
    np.testing.assert_allclose(g, expected)


# ---------------------------------------------------------------- shape operations

SHAPE_OPS = {
    "reshape": lambda x: np.reshape(x, (4, 6)) * np.arange(24.0).reshape(4, 6),
    "reshape_method": lambda x: x.reshape(2, -1),
    "reshape_F": lambda x: np.reshape(x, (6, 4), order="F"),
    "ravel": lambda x: np.ravel(x),
    "flatten": lambda x: x.flatten(),
    "transpose": lambda x: np.transpose(x, (2, 0, 1)),
    "T": lambda x: x.T,
    "swapaxes": lambda x: np.swapaxes(x, 0, 2),
    "moveaxis": lambda x: np.moveaxis(x, 0, -1),
    "expand_dims": lambda x: np.expand_dims(x, 1),
    "squeeze": lambda x: np.squeeze(x[:, :1, :], axis=1),
    "broadcast_to": lambda x: np.broadcast_to(x[:1], (5, 3, 4)),
    "concatenate": lambda x: np.concatenate([x, x[:, :1] * 2.0, np.ones((2, 1, 4))], axis=1),
    "stack": lambda x: np.stack([x, np.sin(x)], axis=-1),
    "hstack_vstack": lambda x: np.vstack([x[0], x[1]]) + np.hstack([x[0], x[1]]).sum(),
    "flip": lambda x: np.flip(x, axis=1),
    "tile": lambda x: np.tile(x, (2, 1, 3)),
    "repeat": lambda x: np.repeat(x, [1, 3], axis=0),
    "repeat_flat": lambda x: np.repeat(x, 2),
    "roll_rot90": lambda x: np.roll(x, 2, axis=2) * np.rot90(x, axes=(1, 2)).reshape(x.shape),
    "slice": lambda x: x[1:, ::2, -1],
    "int_array": lambda x: x[np.array([0, 1, 1, 0]), :, 2],
    "bool_mask": lambda x: x[x.value > 0.5] if isinstance(x, Tracked) else x[x > 0.5],
    "newaxis_ellipsis": lambda x: x[None, ..., 1],
    "where": lambda x: np.where(x > 0.5, x, -2.0 * x),
    "sort": lambda x: np.sort(x, axis=1),
    "triu_tril": lambda x: np.triu(x[0]) + np.tril(x[1], k=-1),
    "diagonal_trace": lambda x: np.diagonal(x, axis1=1, axis2=2) + np.trace(x[0]),
    "take": lambda x: np.take(x, [3, 3, 0], axis=2),
    "atleast": lambda x: np.atleast_2d(x[0, 0, 0]),
    "clip": lambda x: np.clip(x, 0.35, 0.75),
    "take_along_axis": lambda x: np.take_along_axis(x, np.array([[[0, 3, 3]]]), axis=2),
    "broadcast_arrays": lambda x: sum(np.broadcast_arrays(x[:, :1], x[:1, :, :1] * 2.0)),
    "diff": lambda x: np.diff(x, axis=1)[..., :3] + np.diff(x, n=2, axis=-1, prepend=0.5)[:, :2, :3],
    "matrix_transpose": lambda x: np.matrix_transpose(x) * 1.0,
    "degrees_radians_fabs": lambda x: np.degrees(x) * np.radians(x) + np.fabs(x - 0.5),
    "float_power": lambda x: np.float_power(x, 2.5) + np.float_power(2.0, x),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_operations(name):
    x = np.random.default_rng(7).uniform(0.2, 0.9, size=(2, 3, 4))
    check(SHAPE_OPS[name], x)


def test_repeated_indices_add_up():
    x = np.array([1.0, 2.0, 3.0])
    idx = np.array([0, 2, 0, 0, 1, 2])
    u = np.arange(1.0, 7.0)
    _, (g,) = vjp(lambda x: x[idx], (x,), u)
    expected = np.zeros(3)
    np.add.at(expected, idx, u)
    np.testing.assert_array_equal(g, expected)


def test_broadcast_sum_back_to_source_shape(rng):
    # the classic bug: a (3, 1) parameter broadcast against (3, 4) must get a (3, 1) gradient
    b = rand(rng, 3, 1)
    x = rand(rng, 3, 4)
    _, (gb, gx) = vjp(lambda b, x: x + b, (b, x), np.ones((3, 4)))
    assert gb.shape == (3, 1)
    np.testing.assert_allclose(gb, np.full((3, 1), 4.0))
    np.testing.assert_allclose(gx, np.ones((3, 4)))


# ---------------------------------------------------------------- linear algebra

LINALG = {
    "matmul_2d": (lambda a, b: a @ b, [(3, 4), (4, 5)]),
    "matmul_vec_mat": (lambda a, b: a @ b, [(4,), (4, 5)]),
    "matmul_mat_vec": (lambda a, b: a @ b, [(3, 4), (4,)]),
    "matmul_vec_vec": (lambda a, b: np.matmul(a, b), [(4,), (4,)]),
    "matmul_batched": (lambda a, b: a @ b, [(2, 3, 4), (2, 4, 5)]),
    "matmul_batch_broadcast": (lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)]),
    "matmul_stack_2d": (lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    "matmul_transposed": (lambda a, b: a.T @ b.T, [(4, 3), (5, 4)]),
    "dot_2d": (lambda a, b: np.dot(a, b), [(3, 4), (4, 2)]),
    "dot_1d": (lambda a, b: np.dot(a, b), [(4,), (4,)]),
    "dot_nd": (lambda a, b: np.dot(a, b), [(2, 3, 4), (3, 4, 2)]),
    "dot_method": (lambda a, b: a.dot(b), [(3, 4), (4,)]),
    "inner": (lambda a, b: np.inner(a, b), [(2, 4), (3, 4)]),
    "outer": (lambda a, b: np.outer(a, b), [(3,), (2, 2)]),
    "tensordot_int": (lambda a, b: np.tensordot(a, b, axes=2), [(2, 3, 4), (3, 4, 5)]),
    "tensordot_pairs": (lambda a, b: np.tensordot(a, b, axes=([0, 2], [2, 0])), [(2, 3, 4), (4, 5, 2)]),
    "einsum_matmul": (lambda a, b: np.einsum("ij,jk->ik", a, b), [(3, 4), (4, 5)]),
    "einsum_batch": (lambda a, b: np.einsum("bij,bjk->bki", a, b), [(2, 3, 4), (2, 4, 5)]),
    "einsum_outer_sum": (lambda a, b: np.einsum("ij,k->jk", a, b), [(3, 4), (2,)]),
    "einsum_implicit": (lambda a, b: np.einsum("ij,jk", a, b), [(3, 4), (4, 2)]),
    "einsum_one": (lambda a, b: np.einsum("ijk->ki", a) * b.sum(), [(2, 3, 4), (2,)]),
    "trace": (lambda a, b: np.trace(a @ b), [(3, 4), (4, 3)]),
}


@pytest.mark.parametrize("name", sorted(LINALG))
def test_linear_algebra(name, rng):
    f, shapes = LINALG[name]
    check(f, *[rand(rng, *s) for s in shapes])


@pytest.mark.parametrize("ord_axis", [(None, None), (1, None), (np.inf, None), (-np.inf, None),
                                      (3, None), ("fro", (0, 1)), (1, (0, 1)), (np.inf, (0, 1)),
                                      (None, 1), (2, 0)], ids=str)
def test_linalg_norm(ord_axis, rng):
    ord_, axis = ord_axis
    x = rand(rng, 3, 4) - 0.55
    if axis is None and ord_ is not None:
        x = x.ravel()
    check(lambda x: np.linalg.norm(x, ord=ord_, axis=axis), x)


def test_matmul_float32_uses_sgemm(rng):
    a, b = rand(rng, 5, 3, dtype=np.float32), rand(rng, 3, 4, dtype=np.float32)
    ga, gb = gradient_reverse(lambda a, b: np.sum(a @ b), a, b)
    assert ga.dtype == gb.dtype == np.float32
    np.testing.assert_allclose(ga, np.ones((5, 4)) @ b.T, rtol=1e-6)
    np.testing.assert_allclose(gb, a.T @ np.ones((5, 4)), rtol=1e-6)


def test_matmul_with_empty_dimension():
    a = np.zeros((3, 0))
    b = np.zeros((0, 2))
    ga, gb = gradient_reverse(lambda a, b: np.sum(a @ b), a, b)
    assert ga.shape == (3, 0) and gb.shape == (0, 2)


# ---------------------------------------------------------------- API and semantics

def test_unused_input_gets_zero_gradient(rng):
    x, y = rand(rng, 3), rand(rng, 2, 2)
    gx, gy = gradtest.gradient(lambda x, y: np.sum(np.sin(x)), x, y, backend="reverse")
    np.testing.assert_array_equal(gy, np.zeros((2, 2)))
    gx, = gradtest.gradient(lambda x: 3.0, x, backend="reverse")
    np.testing.assert_array_equal(gx, np.zeros(3))


def test_non_differentiable_functions_return_plain_values(rng):
    x = rand(rng, 4)

    def f(x):
        assert isinstance(x > 0.5, np.ndarray)
        assert isinstance(np.argmax(x), np.integer)
        assert isinstance(np.floor(x), np.ndarray)
        assert np.shape(x) == (4,)
        return np.sum(x * np.floor(x * 3))

    check(f, x)


@pytest.mark.parametrize("f, name", [
    (lambda x: np.frexp(x)[0], "frexp"),
    (lambda x: np.histogram2d(x, x), "histogram2d"),
    (lambda x: np.fft.fft(x), "fft"),
    (lambda x: np.fft.rfft(x), "fft.rfft"),
])
def test_unsupported_functions_raise_naming_them(f, name):
    with pytest.raises(NotImplementedError, match=name):
        gradient_reverse(lambda x: np.sum(f(x)), np.eye(2))


def test_out_argument_is_refused():
    with pytest.raises(NotImplementedError, match="out="):
        gradient_reverse(lambda x: np.sum(np.sin(x, out=np.zeros(3))), np.ones(3))


def test_vjp_with_trees_and_multiple_outputs(rng):
    params = {"w": rand(rng, 3, 2), "b": rand(rng, 2), "n": 3}
    x = rand(rng, 4, 3)

    def f(p, x):
        h = np.tanh(x @ p["w"] + p["b"])
        return h, np.sum(h, axis=0)

    u = (rng.standard_normal((4, 2)), rng.standard_normal(2))
    out, (gp, gx) = vjp(f, (params, x), u)
    assert isinstance(out[0], np.ndarray) and out[0].shape == (4, 2)
    assert gp["n"] is None
    h = np.tanh(x @ params["w"] + params["b"])
    dh = (u[0] + u[1]) * (1 - h * h)
    np.testing.assert_allclose(gp["w"], x.T @ dh)
    np.testing.assert_allclose(gp["b"], dh.sum(0))
    np.testing.assert_allclose(gx, dh @ params["w"].T)


def test_vjp_rejects_mismatched_cotangent():
    with pytest.raises(ValueError, match="cotangent"):
        vjp(lambda x: x * 2, (np.ones(3),), np.ones(4))
    with pytest.raises(ValueError, match="cotangent"):
        vjp(lambda x: x * 2, (np.ones(3),), None)
    with pytest.raises(TypeError, match="args"):
        vjp(lambda x: x, np.ones(3), None)


def test_caller_arrays_are_not_modified(rng):
    x = rand(rng, 3, 3)
    before = x.copy()
    gradient_reverse(lambda x: np.sum(np.exp(x) @ x), x)
    np.testing.assert_array_equal(x, before)


def test_mixing_tapes_is_an_error():
    t1, t2 = _reverse.Tape(), _reverse.Tape()
    a, b = Tracked.leaf(t1, np.ones(2)), Tracked.leaf(t2, np.ones(2))
    with pytest.raises(ValueError, match="different tapes"):
        a + b
    t1.release()
    t2.release()


def test_released_tape_refuses_work():
    t = _reverse.Tape()
    a = Tracked.leaf(t, np.ones(2))
    t.release()
    t.release()  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        np.sin(a)


def test_deep_chain_has_no_recursion_limit():
    def f(x):
        for _ in range(20000):
            x = x * 1.0001 + 0.0
        return np.sum(x)

    g = gradient_reverse(f, np.ones(2))[0]
    np.testing.assert_allclose(g, np.full(2, 1.0001 ** 20000), rtol=1e-10)


def test_backend_is_registered_by_default():
    backend = gradtest.get_backend("reverse")
    assert backend.default
    report = gradtest.check_gradients(lambda x: np.sum(x ** 3), np.ones(3))
    assert "reverse" in report.outcomes and report.outcomes["reverse"].status == "pass"


def test_bad_tape_arguments_raise_cleanly():
    t = _reverse.Tape()
    a = t.leaf(0, (3,))
    with pytest.raises(ValueError):
        t.elementwise(999, np.ones(3), a, np.ones(3), -1, None)
    with pytest.raises(ValueError):
        t.elementwise(OP_TABLE["sin"], np.ones(3), 5, np.ones(3), -1, None)  # unknown input
    with pytest.raises(ValueError):
        t.elementwise(OP_TABLE["sin"], np.ones(3), a, np.ones(2), -1, None)  # wrong size
    with pytest.raises(ValueError, match="out of range"):
        t.gather(0, np.array([0, 3], dtype=np.intp), [a], [3])
    with pytest.raises(TypeError):
        t.gather(0, np.array([0, 1]).astype(np.float64), [a], [3])
    with pytest.raises(ValueError):
        t.reshape((4,), a)
    with pytest.raises(ValueError):
        t.backward(a, np.ones(4))
    with pytest.raises(ValueError):
        t.leaf(7, (2,))
    t.release()


def test_integer_index_gives_a_0d_result():
    x = np.array([1.0, 2.0, 3.0])
    out, (g,) = gradtest.vjp(lambda x: x[1] * x[2] + float(0), (x,), 1.0)
    np.testing.assert_allclose(g, [0.0, 3.0, 2.0])
    (g2,) = gradtest.gradient(lambda x: x[1] ** 2, x, backend="reverse")
    np.testing.assert_allclose(g2, [0.0, 4.0, 0.0])

    def shape_of_element(x):
        assert np.shape(x[0]) == ()
        return x[0] * 1.0

    gradtest.gradient(shape_of_element, x, backend="reverse")
