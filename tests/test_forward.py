"""Forward mode: each op's tangents against central differences, over shapes, dtypes and layouts."""

from __future__ import annotations

import numpy as np
import pytest

from gradtest.forward import Dual, jvp

K = 3  # tangent directions per test: exercises the stacked-direction code paths


def _fd(f, args, dirs, h=1e-6):
    """Central differences of f along each direction: list over k of the output derivative."""
    out = []
    for d in range(K):
        plus = [a + h * t[d] if t is not None else a for a, t in zip(args, dirs)]
        minus = [a - h * t[d] if t is not None else a for a, t in zip(args, dirs)]
        out.append((np.asarray(f(*plus), dtype=np.float64) - np.asarray(f(*minus), dtype=np.float64)) / (2 * h))
    return np.stack(out)


def check(f, *args, diff=None, rtol=1e-5, atol=1e-6, seed=0):
    """Runs f on duals of args (those flagged in diff) and compares value and tangents."""
    rng = np.random.default_rng(seed)
    diff = diff or [True] * len(args)
    args = [np.asarray(a) for a in args]
    dirs = [rng.standard_normal((K,) + a.shape) if d else None for a, d in zip(args, diff)]
    duals = [Dual(a, t) if t is not None else a for a, t in zip(args, dirs)]
    out = f(*duals)
    expected = f(*args)
    assert isinstance(out, Dual), type(out)
    assert out.shape == np.shape(expected)
    assert out.tangents.shape == (K,) + np.shape(expected)
    assert out.dtype == np.result_type(expected)
    np.testing.assert_allclose(out.value, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out.tangents, _fd(f, args, dirs), rtol=rtol, atol=atol)
    return out


RNG = np.random.default_rng(42)
X = RNG.uniform(0.3, 0.9, (3, 4))
Y = RNG.uniform(0.3, 0.9, (3, 4))

UNARY = {
    "negative": np.negative, "positive": np.positive, "abs": np.abs, "fabs": np.fabs,
    "exp": np.exp, "expm1": np.expm1, "exp2": np.exp2, "log": np.log, "log1p": np.log1p,
    "log2": np.log2, "log10": np.log10, "sqrt": np.sqrt, "cbrt": np.cbrt, "square": np.square,
    "reciprocal": np.reciprocal, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "arcsinh": np.arcsinh, "arccosh": lambda x: np.arccosh(x + 1.5),
    "arctanh": np.arctanh, "deg2rad": np.deg2rad, "rad2deg": np.rad2deg,
    "pow_scalar": lambda x: x ** 3, "pow_half": lambda x: x ** 0.5, "rpow": lambda x: 2.0 ** x,
    "neg_op": lambda x: -x, "abs_op": lambda x: abs(x - 0.6),
}
BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "power": np.power, "float_power": np.float_power, "arctan2": np.arctan2, "hypot": np.hypot,
    "maximum": np.maximum, "minimum": np.minimum, "fmax": np.fmax, "fmin": np.fmin,
    "logaddexp": np.logaddexp, "logaddexp2": np.logaddexp2, "remainder": np.remainder,
    "fmod": np.fmod, "mod_op": lambda a, b: (a + 1.0) % b,
    "ops": lambda a, b: (a + b) * (a - b) / b - (a @ b.T).sum() + b ** a,
}


@pytest.mark.parametrize("name", UNARY)
def test_unary(name):
    check(UNARY[name], X)


@pytest.mark.parametrize("name", BINARY)
def test_binary_both_and_each(name):
    f = BINARY[name]
    check(f, X, Y)
    check(f, X, Y, diff=[True, False])
    check(f, X, Y, diff=[False, True])


@pytest.mark.parametrize("name", ["add", "multiply", "divide", "power", "arctan2", "maximum", "hypot"])
def test_binary_broadcasting(name):
    f = BINARY[name]
    check(f, X, Y[0])                 # (3, 4) with (4,)
    check(f, X[:, :1], Y)             # (3, 1) with (3, 4)
    check(f, X[:, None, :1], Y[None, :, 0])  # (3, 1, 1) with (1, 3): result (3, 1, 3)
    check(f, X, np.float64(0.7))      # 0-d dual
    check(lambda a: f(a, 0.7), X)     # python scalar constant
    check(lambda a: f(0.7, a), X)


def test_float32():
    x32, y32 = X.astype(np.float32), Y.astype(np.float32)
    out = check(lambda a, b: np.sin(a) * b + np.exp(a) / b, x32, y32, rtol=2e-2, atol=2e-3)
    assert out.dtype == np.float32 and out.tangents.dtype == np.float32
    # a float64 constant promotes; a Python scalar does not (NEP 50)
    assert (Dual(x32, np.ones((1,) + x32.shape)) * 2.0).dtype == np.float32
    assert (Dual(x32, np.ones((1,) + x32.shape)) * Y).dtype == np.float64


def test_zero_d_and_empty():
    check(lambda a: np.sin(a) * a, np.float64(0.4))
    check(lambda a, b: np.arctan2(a, b), np.array(0.4), X)
    out = Dual(np.zeros((0, 3)), np.zeros((K, 0, 3))) * 2.0
    assert out.shape == (0, 3) and out.tangents.shape == (K, 0, 3)


def test_non_contiguous_and_transposed():
    big = RNG.uniform(0.3, 0.9, (6, 8))
    check(lambda a: np.exp(a[::2, 1::3]) * a[::2, ::3], big)
    check(lambda a, b: a.T * b, big, big.T)
    check(lambda a, b: np.hypot(a.T, b[::-1]), big[:, :6], big[:6, :6])
    # a dual whose tangents are a transposed (non-contiguous) view
    d = Dual(X, RNG.standard_normal((K, 3, 4)))
    t = Dual.__new__(Dual)
    t.value, t.tangents = X.T, np.transpose(d.tangents, (0, 2, 1))
    assert not t.tangents.flags.c_contiguous
    out = np.sin(t)
    np.testing.assert_allclose(out.tangents, np.cos(X.T)[None] * np.transpose(d.tangents, (0, 2, 1)))


@pytest.mark.parametrize("axes", [None, (1, 0, 2), (-1, 0, 1), (2, 1, 0), (0, 1, 2)])
def test_transpose_methods_are_views_with_numpys_axes(axes):
    d = Dual(RNG.uniform(size=(2, 3, 4)), RNG.standard_normal((K, 2, 3, 4)))
    y = d.T if axes is None else d.transpose(axes)
    np.testing.assert_array_equal(y.value, np.transpose(d.value, axes))
    np.testing.assert_array_equal(y.tangents, np.stack([np.transpose(t, axes) for t in d.tangents]))
    assert np.shares_memory(y.value, d.value) and np.shares_memory(y.tangents, d.tangents)
    if axes is not None:
        np.testing.assert_array_equal(d.transpose(*axes).tangents, y.tangents)


def test_transpose_refuses_what_numpy_refuses_and_assigns_through_the_view():
    d = Dual(np.zeros((2, 3)), np.zeros((K, 2, 3)))
    with pytest.raises(ValueError, match="repeated axis"):
        d.transpose(0, 0)
    with pytest.raises(ValueError, match="axes don't match"):
        d.transpose(0)
    with pytest.raises(np.exceptions.AxisError):
        d.transpose(0, 2)
    d.T[2, 1] = Dual(np.array(5.0), np.arange(1.0, K + 1))
    assert d.value[1, 2] == 5.0 and list(d.tangents[:, 1, 2]) == list(np.arange(1.0, K + 1))


def test_random_shapes_broadcasting():
    rng = np.random.default_rng(7)
    funcs = [np.multiply, np.add, np.hypot, np.maximum, lambda a, b: a / (1 + b * b)]
    for trial in range(30):
        nd = int(rng.integers(0, 4))
        shape = tuple(int(s) for s in rng.integers(1, 4, nd))
        other = tuple(s if rng.random() < 0.6 else 1 for s in shape)[int(rng.integers(0, nd + 1)):]
        a = rng.uniform(0.3, 1.0, shape)
        b = rng.uniform(0.3, 1.0, other)
        if rng.random() < 0.3 and nd >= 2:
            a = np.asfortranarray(a)
        f = funcs[trial % len(funcs)]
        check(f, a, b, seed=trial)
        check(f, b, a, seed=trial)


def test_nan_safe_zero_tangents():
    # sqrt'(0) = inf, but a direction that does not move that element keeps a zero derivative
    x = np.array([0.0, 4.0])
    d = Dual(x, np.array([[0.0, 1.0], [1.0, 0.0]]))
    out = np.sqrt(d)
    assert out.tangents[0, 0] == 0.0 and out.tangents[0, 1] == 0.25
    assert out.tangents[1, 0] == np.inf


def test_kinks_follow_the_table():
    d = Dual(np.array([0.0, 1.0, 2.0]), np.ones((1, 3)))
    np.testing.assert_array_equal(np.abs(d).tangents, [[0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(np.maximum(d, 1.0).tangents, [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(np.max(Dual(np.array([2.0, 2.0, 1.0]), np.eye(3)), axis=0).tangents,
                                  [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(np.clip(d, 0.5, 1.5).tangents, [[0.0, 1.0, 0.0]])


# ---- reductions -------------------------------------------------------------------------------

A = RNG.uniform(0.5, 1.5, (3, 4, 5))
REDUCTIONS = {
    "sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min,
    "amax": np.amax, "amin": np.amin, "var": np.var, "std": np.std,
}


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(name, axis, keepdims):
    check(lambda a: REDUCTIONS[name](a, axis=axis, keepdims=keepdims), A)


def test_reduction_methods_and_options():
    check(lambda a: a.sum(axis=1) + a.mean() + a.prod(axis=0).sum() + a.max(axis=2).sum() + a.min(), A)
    check(lambda a: np.var(a, axis=1, ddof=1) + np.std(a, axis=0, ddof=1).sum(), A)
    check(lambda a: np.add.reduce(a, axis=1).sum() * np.multiply.reduce(a) + np.maximum.reduce(a, axis=None), A[0])
    check(lambda a: np.sum(a, initial=2.0) + np.prod(a[0], initial=3.0), A)


def test_prod_with_zeros_is_exact():
    x = np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 5.0], [1.0, 2.0, 3.0]])
    out = np.prod(Dual(x, np.eye(9).reshape(9, 3, 3)), axis=1)
    grad = out.tangents.reshape(3, 3, 3)  # grad[i, j, r]: direction x[i, j], output row r
    own_row = grad[np.arange(3), :, np.arange(3)]  # d prod(x[i]) / d x[i, j]
    np.testing.assert_array_equal(own_row, [[6.0, 0.0, 0.0], [0.0, 0.0, 0.0], [6.0, 3.0, 2.0]])
    assert np.count_nonzero(grad) == np.count_nonzero(own_row)


def test_cumulative():
    check(lambda a: np.cumsum(a, axis=1) + np.cumprod(a, axis=-1), A)
    check(lambda a: np.cumsum(a) * np.cumprod(a), A[0])
    check(lambda a: np.add.accumulate(a) + np.multiply.accumulate(a, axis=1), A[0])
    check(lambda a: np.cumprod(a * (a > 0.8), axis=1), A, atol=1e-5)  # zeros take the exact path


def test_std_of_constant_is_zero():
    out = np.std(Dual(np.ones(4), np.eye(4)))
    np.testing.assert_array_equal(out.tangents, np.zeros(4))


# ---- shape operations and indexing ------------------------------------------------------------

SHAPE_OPS = {
    "reshape": lambda a: a.reshape(4, 15) * 1.0,
    "reshape_F": lambda a: np.reshape(a, (5, 12), order="F"),
    "reshape_neg": lambda a: np.reshape(a, (-1, 5)),
    "ravel": lambda a: np.ravel(a) + a.flatten(),
    "ravel_F": lambda a: np.ravel(a, order="F"),
    "transpose": lambda a: np.transpose(a, (2, 0, 1)) + a.T.transpose(0, 2, 1),
    "T": lambda a: a.T,
    "swapaxes": lambda a: np.swapaxes(a, 0, -1),
    "moveaxis": lambda a: np.moveaxis(a, [0, 1], [-1, 0]),
    "expand_dims": lambda a: np.expand_dims(a, (0, -1)),
    "squeeze": lambda a: np.squeeze(a[:1, :, :1]) + np.squeeze(a[:, :1], axis=1).sum(),
    "broadcast_to": lambda a: np.broadcast_to(a[0], (2, 4, 5)),
    "broadcast_arrays": lambda a: np.broadcast_arrays(a[:, :1], a[0])[0],
    "concatenate": lambda a: np.concatenate([a, 2 * a, np.ones((3, 4, 1))], axis=-1),
    "concatenate_none": lambda a: np.concatenate([a, a[0]], axis=None),
    "stack": lambda a: np.stack([a, np.zeros_like(a), a * a], axis=1),
    "hstack": lambda a: np.hstack([a[0], a[1]]),
    "vstack": lambda a: np.vstack([a[0, 0], a[1, 1]]),
    "flip": lambda a: np.flip(a, 1) + np.flip(a),
    "tile": lambda a: np.tile(a[0], (2, 1, 3)),
    "repeat": lambda a: np.repeat(a, [1, 2, 0, 1], axis=1) .sum() + np.repeat(a, 2),
    "take": lambda a: np.take(a, [0, 2, 2], axis=2) + np.take(a, [5, 1]).sum(),
    "sort": lambda a: np.sort(a, axis=1),
    "diff": lambda a: np.diff(a, axis=0) + np.diff(a, n=2, axis=0).sum(),
    "where": lambda a: np.where(a > 1.0, a * a, -a),
    "where_const": lambda a: np.where(a > 1.0, 0.0, np.sin(a)),
    "clip": lambda a: np.clip(a, 0.7, 1.2) + a.clip(0.8),
    "diagonal": lambda a: np.diagonal(a, 1, 1, 2),
    "trace": lambda a: np.trace(a[0]) + np.trace(a, axis1=1, axis2=2).sum(),
    "atleast": lambda a: np.atleast_2d(a[0, 0, 0]) * np.atleast_3d(a[0]).sum(),
    "copy": lambda a: np.copy(a) + a.copy(),
    "astype": lambda a: a.astype(np.float64) * 2,
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops(name):
    check(SHAPE_OPS[name], A)


INDICES = {
    "int": lambda a: a[1],
    "slice": lambda a: a[1:, ::2, -1],
    "ellipsis": lambda a: a[..., 1:3],
    "newaxis": lambda a: a[None, :, 1, None],
    "int_array": lambda a: a[[0, 2, 2]],
    "int_arrays_adjacent": lambda a: a[:, [0, 1], [2, 3]],
    "int_arrays_apart": lambda a: a[[0, 1], :, [2, 3]],  # NumPy moves the broadcast axis first
    "int_mixed_apart": lambda a: a[0, ..., [1, 4]],
    "bool_mask": lambda a: a[a > 1.0],
    "bool_row": lambda a: a[np.array([True, False, True])],
    "bool_ellipsis": lambda a: a[..., np.array([True, False, True, True, False])],
    "iter": lambda a: sum(row * i for i, row in enumerate(a)),
}


@pytest.mark.parametrize("name", INDICES)
def test_indexing(name):
    check(INDICES[name], A)


def test_setitem_on_duals():
    def f(a):
        b = a * 1.0
        b[0] = np.sin(a[1])
        b[:, 1:3] = 2.0
        return b

    check(f, A[:, :, 0])


# ---- products ---------------------------------------------------------------------------------

M = RNG.standard_normal((4, 5))
N = RNG.standard_normal((5, 3))
V = RNG.standard_normal(5)
B3 = RNG.standard_normal((2, 4, 5))

PRODUCTS = {
    "matmul": (lambda a, b: a @ b, (M, N)),
    "matmul_vec_right": (lambda a, b: a @ b, (M, V)),
    "matmul_vec_left": (lambda a, b: a @ b, (V, N)),
    "matmul_vec_vec": (lambda a, b: np.matmul(a, b), (V, V)),
    "matmul_batched": (lambda a, b: a @ b, (B3, N)),
    "matmul_batched_vec": (lambda a, b: a @ b, (B3, V)),
    "matmul_vec_batched": (lambda a, b: a @ b, (V, np.transpose(B3, (0, 2, 1)))),
    "matmul_batched_both": (lambda a, b: a @ b, (B3, np.transpose(B3, (0, 2, 1)))),
    "matmul_transposed": (lambda a, b: a.T @ b.T, (N, M)),
    "dot": (lambda a, b: np.dot(a, b) + np.dot(b.T, a.T).T, (M, N)),
    "dot_nd": (lambda a, b: np.dot(a, b), (B3, N)),
    "dot_scalar": (lambda a, b: np.dot(a, b[0]), (M, V)),
    "inner": (lambda a, b: np.inner(a, b), (M, V)),
    "inner_nd": (lambda a, b: np.inner(a, b), (B3, M)),
    "outer": (lambda a, b: np.outer(a, b), (M, V)),
    "vdot": (lambda a, b: np.vdot(a, b), (M, M)),
    "tensordot": (lambda a, b: np.tensordot(a, b, axes=([1, 2], [1, 0])), (B3, np.transpose(B3, (2, 1, 0)))),
    "tensordot_int": (lambda a, b: np.tensordot(a, b, axes=1), (B3, N)),
    "einsum_matmul": (lambda a, b: np.einsum("ij,jk->ik", a, b), (M, N)),
    "einsum_implicit": (lambda a, b: np.einsum("ij,jk", a, b), (M, N)),
    "einsum_batch": (lambda a, b: np.einsum("bij,jk->bik", a, b), (B3, N)),
    "einsum_ellipsis": (lambda a, b: np.einsum("...j,j->...", a, b), (B3, V)),
    "einsum_trace_like": (lambda a, b: np.einsum("ij,ij->", a, b), (M, M)),
}


@pytest.mark.parametrize("name", PRODUCTS)
def test_products(name):
    f, args = PRODUCTS[name]
    check(f, *args)
    check(f, *args, diff=[True, False])
    check(f, *args, diff=[False, True])


def test_products_float32():
    out = check(lambda a, b: a @ b, M.astype(np.float32), N.astype(np.float32), rtol=2e-2, atol=5e-3)
    assert out.tangents.dtype == np.float32


def test_einsum_unary_and_three_operands():
    check(lambda a: np.einsum("ii->", a), M[:4, :4])
    check(lambda a: np.einsum("ij->ji", a), M)
    check(lambda a, b, c: np.einsum("ij,jk,k->i", a, b, c), M, N, V[:3])


@pytest.mark.parametrize("kwargs", [{}, {"ord": 2}, {"ord": 1}, {"ord": np.inf}, {"ord": 3},
                                    {"axis": 1}, {"axis": 0, "keepdims": True}, {"ord": "fro", "axis": (0, 1)}])
def test_norm(kwargs):
    x = M if "axis" in kwargs else M[0]
    check(lambda a: np.linalg.norm(a, **kwargs), x)


# ---- non-differentiable and unsupported -------------------------------------------------------


def test_non_differentiable_give_plain_values():
    d = Dual(A, np.ones((K,) + A.shape))
    for out in (np.floor(d), np.round(d), d > 1, d == d, np.argmax(d), np.sign(d), np.isnan(d),
                np.argsort(d, axis=1), np.zeros_like(d, dtype=int), np.shape(d), np.nonzero(d > 1)):
        assert not isinstance(out, Dual)
        if isinstance(out, tuple):
            continue
    assert d.argmax() == np.argmax(A)
    assert np.floor(d).shape == A.shape


@pytest.mark.parametrize("call, name", [
    (lambda d: np.histogram2d(d[0], d[1]), "numpy.histogram2d"),
    (lambda d: np.trim_zeros(d[0]), "numpy.trim_zeros"),
    (lambda d: np.fft.fft(d), "fft"),
    (lambda d: np.roots(d[0]), "numpy.roots"),
    (lambda d: np.nextafter(d, d), "numpy.nextafter"),
    (lambda d: np.add.reduceat(d, [0, 1]), "numpy.add.reduceat"),
    (lambda d: np.asarray(d), "drop its derivatives"),
    (lambda d: float(d[0, 0]), "drop its derivatives"),
    (lambda d: d.sum().item(), "drop its derivatives"),
    (lambda d: np.zeros((4, 4)).__setitem__(0, d[0]), "drop its derivatives"),
    (lambda d: np.sin(d, out=np.empty((4, 4))), "out="),
])
def test_unsupported_functions_raise_naming_them(call, name):
    d = Dual(M[:4, :4], np.ones((K, 4, 4)))
    with pytest.raises(NotImplementedError, match=name.replace(".", r"\.")):
        call(d)


def test_mismatched_directions_and_bad_construction():
    a = Dual(X, np.ones((2,) + X.shape))
    b = Dual(X, np.ones((3,) + X.shape))
    with pytest.raises(ValueError, match="leading dimension"):
        a + b
    with pytest.raises(ValueError):
        np.concatenate([a, b])
    with pytest.raises(ValueError, match="tangents"):
        Dual(X, np.ones(X.shape))
    with pytest.raises(TypeError, match="value"):
        Dual(np.array(["a"]), np.ones((1, 1)))
    with pytest.raises(IndexError, match="index"):
        X[a] if False else a[a]


def test_inputs_are_not_modified():
    x = X.copy()
    t = np.ones((K,) + X.shape)
    d = Dual(x, t)
    d[0] = 5.0
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(t, 1.0)


# ---- jvp --------------------------------------------------------------------------------------


def test_jvp():
    def f(a, b, scale):
        return {"y": np.tanh(a @ b) * scale, "z": (np.sum(a ** 2), 3.0)}

    t_a = RNG.standard_normal(M.shape)
    value, tangent = jvp(f, (M, N, 2.0), (t_a, None, None))
    np.testing.assert_allclose(value["y"], f(M, N, 2.0)["y"])
    h = 1e-6
    fd = (f(M + h * t_a, N, 2.0)["y"] - f(M - h * t_a, N, 2.0)["y"]) / (2 * h)
    np.testing.assert_allclose(tangent["y"], fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tangent["z"][0], 2 * np.sum(M * t_a))
    assert tangent["z"][1] == 0.0


def test_jvp_errors():
    with pytest.raises(ValueError, match="tangents"):
        jvp(np.sin, (X,), ())
    with pytest.raises(ValueError, match=r"tangents\[0\]"):
        jvp(np.sin, (X,), (np.ones(3),))


def test_matmul_from_threads_is_consistent():
    # the matmul scratch is per thread and the GIL is released around the GEMMs
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    pairs = [(Dual(rng.standard_normal((40, 30)), rng.standard_normal((5, 40, 30))),
              Dual(rng.standard_normal((30, 20 + i)), rng.standard_normal((5, 30, 20 + i)))) for i in range(8)]
    expected = [np.matmul(a.tangents, b.value) + np.matmul(a.value, b.tangents) for a, b in pairs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda ab: (ab[0] @ ab[1]).tangents, pairs * 4))
    for got, want in zip(results, expected * 4):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_large_elementwise_matches_reference():
    # above the size where the GIL is released, with broadcasting and a strided operand
    rng = np.random.default_rng(12)
    a = Dual(rng.uniform(0.5, 1.5, (300, 200)), rng.standard_normal((4, 300, 200)))
    b = Dual(rng.uniform(0.5, 1.5, 200), rng.standard_normal((4, 200)))
    out = np.power(a.T[::2].T, b[::2])
    av, bv = a.value[:, ::2], b.value[::2]
    want = (bv * av ** (bv - 1)) * a.tangents[:, :, ::2] + (av ** bv * np.log(av)) * b.tangents[:, None, ::2]
    np.testing.assert_allclose(out.tangents, want, rtol=1e-12)


def test_empty_and_degenerate_products():
    for a_shape, b_shape in [((0, 3), (3, 2)), ((2, 0), (0, 3)), ((2, 3), (3, 0)), ((0,), (0,))]:
        a = Dual(np.ones(a_shape), np.ones((K,) + a_shape))
        b = Dual(np.ones(b_shape), np.ones((K,) + b_shape))
        out = a @ b
        want = np.matmul(np.ones(a_shape), np.ones(b_shape))
        assert out.shape == want.shape and out.tangents.shape == (K,) + want.shape
        np.testing.assert_array_equal(out.value, want)
        np.testing.assert_array_equal(out.tangents, 0.0)
    with pytest.raises(ValueError):
        Dual(np.ones((2, 3)), np.ones((K, 2, 3))) @ np.ones((2, 3))


def test_random_shapes_reductions_and_layouts():
    rng = np.random.default_rng(21)
    names = list(REDUCTIONS) + ["cumsum", "cumprod"]
    for trial in range(40):
        nd = int(rng.integers(1, 4))
        shape = tuple(int(s) for s in rng.integers(1, 5, nd))
        x = rng.uniform(0.5, 1.5, shape)
        if nd >= 2 and trial % 3 == 0:
            x = x.T  # a transposed, non-contiguous input
        name = names[trial % len(names)]
        if name in ("cumsum", "cumprod"):
            axis = int(rng.integers(-nd, nd))
            f = (lambda a, name=name, axis=axis: getattr(np, name)(a, axis=axis))
        else:
            axis = tuple(sorted(set(int(a) for a in rng.integers(0, x.ndim, int(rng.integers(1, x.ndim + 1))))))
            keepdims = bool(trial % 2)
            f = (lambda a, name=name, axis=axis, keepdims=keepdims:
                 REDUCTIONS[name](a, axis=axis, keepdims=keepdims))
        check(f, x, seed=trial)
