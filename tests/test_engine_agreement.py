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
    # ... and an infinite tangent meeting a zero weight or mask (max, clip, where) is 0 in both
    # (forward computed inf * 0 = NaN)
    for f in (lambda x: np.max(np.sqrt(x)), lambda x: np.sum(np.clip(np.sqrt(x), 1.0, 3.0)),
              lambda x: np.sum(np.maximum(np.sqrt(x), 1.0))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for grad in (forward_gradient, reverse_gradient):
                np.testing.assert_array_equal(grad(f, np.array([0.0, 4.0])), [0.0, 0.25])


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
    # the protocol coverage builds linalg on: y = value, dy = jvp(dx), the jvp built by
    # jvp_of(inputs, outputs) (called with the plain values at first order)
    from gradtest import _primitives as P
    import gradtest

    def inv(a):
        ai = np.linalg.inv(P.value(a))
        return P.linearized(ai, [a], lambda _, y: lambda da: -(y @ da @ y), "numpy.linalg.inv")

    def solve(a, b):
        av = P.value(a)
        x, ai = np.linalg.solve(av, P.value(b)), np.linalg.inv(av)
        return P.linearized(x, [a, b], lambda _, y: lambda da, db: ai @ (db - da @ y),
                            "numpy.linalg.solve")

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
    # order 2: jvp_of is called again on the recorded values, so H v is right
    from gradtest.reverse import gradient_reverse, hvp
    v = rng.standard_normal(A.shape)
    g = lambda A: np.sum(inv(A) ** 3)  # noqa: E731
    (_,), (hv,) = hvp(g, (A,), (v,))
    h = 1e-5
    fd = (gradient_reverse(g, A + h * v)[0] - gradient_reverse(g, A - h * v)[0]) / (2 * h)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-7)


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


# --------------------------------------------------------------------------------------------
# one suite over the whole registry: every registered function on adversarial inputs
# --------------------------------------------------------------------------------------------

_NAN, _INF = np.nan, np.inf
INPUTS = {
    # ties, zeros and a constant row
    "ties": np.array([[1.0, 1.0, 0.0, -2.0], [3.0, 3.0, 3.0, 3.0], [0.5, -1.0, 2.0, 2.0]]),
    "smooth": np.array([[0.31, 0.72, 0.55, 0.23], [0.84, 0.47, 0.66, 0.38], [0.29, 0.61, 0.77, 0.52]]),
    "nan_inf": np.array([[1.0, _NAN, 0.5, -1.5], [_INF, 2.0, -_INF, 0.25], [0.75, 0.5, 1.25, _NAN]]),
    "f32": np.array([[0.31, 0.72, 0.55, 0.23], [0.84, 0.47, 0.66, 0.38], [0.29, 0.61, 0.77, 0.52]],
                    dtype=np.float32),
    "0d": np.array(0.43),
    "empty": np.zeros((0, 4)),
}
# views taken inside f: the engines see non-contiguous and negative-stride operands
VIEWS = {"": lambda x: x, "T": lambda x: x.T, "rev": lambda x: x[::-1]}
SMOOTH_FAMILIES = ("smooth", "f32")

_OTHER = lambda x: np.abs(np.flip(x)) * 0.5 + 0.3  # noqa: E731  a second operand built from x

# name -> (g, families): g maps the (2-D, 0-d or empty) input to the function's output
SPECS: dict[str, tuple] = {}
_ALL = ("ties", "smooth", "nan_inf", "f32", "0d", "empty")
_ND = ("ties", "smooth", "nan_inf", "f32", "empty")
_UNARY_DOMAIN = {"arccosh": lambda x: np.abs(x) + 1.5, "arcsin": lambda x: x * 0.9,
                 "arccos": lambda x: x * 0.9, "arctanh": lambda x: x * 0.9,
                 "log": np.abs, "log2": np.abs, "log10": np.abs, "sqrt": np.abs,
                 "reciprocal": lambda x: x + 2.0}
for _n in ("absolute arccos arccosh arcsin arcsinh arctan arctanh cbrt cos cosh exp exp2 expm1 "
           "fabs log log10 log1p log2 negative positive reciprocal sin sinh sqrt square tan tanh "
           "deg2rad degrees rad2deg radians conjugate").split():
    _dom = _UNARY_DOMAIN.get(_n, lambda x: x)
    SPECS[f"numpy.{_n}"] = (lambda x, u=getattr(np, _n), d=_dom: u(d(x)), _ALL)
for _n in "add subtract multiply divide power arctan2 hypot logaddexp logaddexp2 maximum minimum fmax fmin fmod remainder float_power".split():
    SPECS[f"numpy.{_n}"] = (lambda x, u=getattr(np, _n): u(x, _OTHER(x)), _ALL)
SPECS["numpy.power"] = (lambda x: np.power(np.abs(x) + 0.5, _OTHER(x)) + np.power(x, 2.0), _ALL)
SPECS["numpy.float_power"] = (lambda x: np.float_power(np.abs(x) + 0.5, _OTHER(x)), _ALL)

SPECS.update({
    "numpy.sum": [(lambda x: np.sum(x, axis=0) + np.sum(x) + np.sum(x, axis=(0, -1), keepdims=True)[0], _ND),
                  (lambda x: np.sum(x, axis=0, where=P_(x) > 0.4) + np.sum(x * x, where=P_(x) < 1.0), _ND)],
    "numpy.add.reduce": (lambda x: np.add.reduce(x), _ND),
    "numpy.mean": [(lambda x: np.mean(x, axis=-1) if np.ndim(x) else np.mean(x), _ALL),
                   (lambda x: np.mean(x, axis=-1, where=P_(x) > 0.4), ("ties", "smooth", "nan_inf", "f32"))],
    "numpy.max": (lambda x: np.max(x, axis=-1), ("ties", "smooth", "nan_inf", "f32", "0d")),
    "numpy.amax": (lambda x: np.amax(x, axis=0, initial=0.6), _ND),
    "numpy.min": (lambda x: np.min(x), ("ties", "smooth", "nan_inf", "f32", "0d")),
    "numpy.amin": (lambda x: np.amin(x, axis=(0, 1), keepdims=True), ("ties", "smooth", "nan_inf", "f32")),
    "numpy.maximum.reduce": (lambda x: np.maximum.reduce(x, axis=-1), ("ties", "smooth", "nan_inf", "f32")),
    "numpy.minimum.reduce": (lambda x: np.minimum.reduce(x), ("ties", "smooth", "nan_inf", "f32")),
    "numpy.prod": (lambda x: np.prod(x, axis=-1) + np.prod(x[..., :1]), _ND),
    "numpy.multiply.reduce": (lambda x: np.multiply.reduce(x, axis=0), _ND),
    "numpy.var": [(lambda x: np.var(x, axis=-1)[:, None] + np.var(x, axis=0, ddof=1), _ND),
                  (lambda x: np.concatenate([np.var(x, axis=-1), np.var(x, axis=0, ddof=3)]),
                   ("ties", "nan_inf", "empty"))],
    "numpy.std": [(lambda x: np.std(x, axis=-1, ddof=1)[:, None] + np.std(x), _ND),
                  (lambda x: np.std(x), ("0d",)),
                  (lambda x: np.concatenate([np.std(x, axis=-1), np.std(x, axis=0, ddof=3)]),
                   ("ties", "nan_inf", "empty"))],
    "numpy.cumsum": (lambda x: np.cumsum(x, axis=-1) if np.ndim(x) else np.cumsum(x), _ALL),
    "numpy.add.accumulate": (lambda x: np.add.accumulate(x), _ND),
    "numpy.cumprod": (lambda x: np.cumprod(x, axis=-1) if np.ndim(x) else np.cumprod(x), _ALL),
    "numpy.multiply.accumulate": (lambda x: np.multiply.accumulate(x, axis=1), _ND),
    "numpy.reshape": (lambda x: np.reshape(x, (-1,)) * np.reshape(x, np.shape(x)[::-1] or (), order="F").ravel(), _ALL),
    "numpy.ravel": (lambda x: np.ravel(x, order="F"), _ALL),
    "numpy.expand_dims": (lambda x: np.expand_dims(x, 0), _ALL),
    "numpy.squeeze": (lambda x: np.squeeze(x[..., :1] if np.ndim(x) else x), _ALL),
    "numpy.transpose": (lambda x: np.transpose(x), _ALL),
    "numpy.matrix_transpose": (lambda x: np.matrix_transpose(x), _ND),
    "numpy.swapaxes": (lambda x: np.swapaxes(x, 0, 1), _ND),
    "numpy.moveaxis": (lambda x: np.moveaxis(x, 0, -1), _ND),
    "numpy.flip": (lambda x: np.flip(x), _ALL),
    "numpy.fliplr": (lambda x: np.fliplr(x), _ND),
    "numpy.flipud": (lambda x: np.flipud(x), _ND),
    "numpy.rot90": (lambda x: np.rot90(x), _ND),
    "numpy.roll": (lambda x: np.roll(x, 1, axis=0), _ND),
    "numpy.tile": (lambda x: np.tile(x, (2, 1)), _ALL),
    "numpy.repeat": (lambda x: np.repeat(x, 2, axis=0), _ND),
    "numpy.diagonal": (lambda x: np.diagonal(x, 1), _ND),
    "numpy.trace": (lambda x: np.trace(x, -1), _ND),
    "numpy.take": (lambda x: np.take(x, [0, 2, 2], axis=-1) if np.size(x) else np.take(x, [], axis=0), _ND),
    "numpy.take_along_axis": (lambda x: np.take_along_axis(x, np.argsort(P_(x), axis=0), axis=0), _ND),
    "numpy.sort": (lambda x: np.sort(x, axis=-1), _ND),
    "numpy.atleast_1d": (lambda x: np.atleast_1d(x), _ALL),
    "numpy.atleast_2d": (lambda x: np.atleast_2d(x), _ALL),
    "numpy.atleast_3d": (lambda x: np.atleast_3d(x), _ALL),
    "numpy.broadcast_to": (lambda x: np.broadcast_to(x, (2,) + np.shape(x)), _ALL),
    "numpy.broadcast_arrays": (lambda x: np.broadcast_arrays(x, np.ones((2, 1, 1)))[0], _ALL),
    "numpy.concatenate": (lambda x: np.concatenate([x, 2.0 * x, np.ones((1,) + np.shape(x)[1:])]), _ND),
    "numpy.stack": (lambda x: np.stack([x, np.ones(np.shape(x)), x], axis=-1), _ALL),
    "numpy.hstack": (lambda x: np.hstack([x, x * x]), _ALL),
    "numpy.vstack": (lambda x: np.vstack([x, x * x]), _ALL),
    "numpy.dstack": (lambda x: np.dstack([x, x * x]), _ALL),
    "numpy.column_stack": (lambda x: np.column_stack([x, np.ones(np.shape(x)), x]), _ND),
    "numpy.where": (lambda x: np.where(P_(x) > 0.5, x, 2.0) + np.where(P_(x) > 0.6, 3.0, x * x), _ALL),
    "numpy.tril": (lambda x: np.tril(x, -1), _ND),
    "numpy.triu": (lambda x: np.triu(x, 1), _ND),
    "numpy.diag": (lambda x: np.diag(x) if np.ndim(x) == 2 else np.diag(np.ravel(x)), _ALL),
    "numpy.diff": (lambda x: np.diff(x, axis=-1) + np.diff(x, n=2, axis=-1, prepend=0.5, append=x[..., -1:]).sum(axis=-1, keepdims=True) if np.size(x) else np.diff(x), _ND),
    "numpy.copy": (lambda x: np.copy(x), _ALL),
    "numpy.clip": (lambda x: np.clip(x, 0.5, 2.0) + np.clip(x, a_min=None, a_max=0.6), _ALL),
    "numpy.zeros_like": (lambda x: np.zeros_like(x) + x, _ALL),
    "numpy.ones_like": (lambda x: np.ones_like(x) * x, _ALL),
    "numpy.empty_like": (lambda x: np.shape(np.empty_like(x)) and x, _ALL),
    "numpy.full_like": (lambda x: np.full_like(x, 2.0) * x, _ALL),
    "numpy.matmul": (lambda x: np.concatenate([np.ravel(np.matmul(x, x.T)), np.ravel(x[:1] @ x.T),
                                               x[:, 0] @ x]), _ND),
    "numpy.dot": (lambda x: np.dot(x, x.T) + np.dot(x[..., 0], 2.0), _ND),
    "numpy.inner": (lambda x: np.inner(x, x), _ALL),
    "numpy.outer": (lambda x: np.outer(x, np.flip(x)), _ALL),
    "numpy.vdot": (lambda x: np.vdot(x, x * x), _ALL),
    "numpy.tensordot": (lambda x: np.tensordot(x, x * x, axes=([0], [0])), _ND),
    "numpy.einsum": [(lambda x: np.einsum("ij,kj->ik", x, x) + np.einsum("...j,...j", x, x)[:, None]
                      + np.einsum(x, [0, 1], [1]).sum() + np.einsum("ii", x[:3, :3])
                      + np.einsum("ij,jk,k->i", x, x.T, x[:, 0])[:, None], ("ties", "smooth", "nan_inf", "f32")),
                     (lambda x: np.einsum("...,...", x, x), ("0d",)),
                     (lambda x: np.einsum("ij,kj->ik", x, x) + np.einsum("ij->", x), ("empty",))],
    # segment sums and np.unique (gradtest._rules_scatter)
    "numpy.unique": (lambda x: np.unique(x) * np.arange(np.unique(P_(x)).size), _ALL),
    "numpy.histogram": (lambda x: np.concatenate([*np.histogram(np.ravel(x), bins=3, weights=np.ravel(x) ** 2),
                                                  np.histogram(np.ravel(x), bins=2, density=True)[0]]),
                        ("ties", "smooth", "f32", "0d", "empty")),
    "numpy.histogram_bin_edges": (lambda x: np.histogram_bin_edges(np.ravel(x), bins=4), ("ties", "smooth", "f32", "0d")),
    "numpy.bincount": (lambda x: np.bincount(np.arange(np.size(x)) % 3, weights=np.ravel(x) * 2.0), _ALL),
    "numpy.add.at": (lambda x: _accumulate(np.add, x), _ALL),
    # Python-level NumPy functions (gradtest._rules_python)
    "numpy.apply_along_axis": (lambda x: np.apply_along_axis(lambda r: r * np.sum(r), -1, x), ("ties", "smooth", "nan_inf", "f32")),
    "numpy.piecewise": (lambda x: np.piecewise(x, [P_(x) < 0.5, P_(x) > 2.0], [lambda z: z ** 2, 3.0, lambda z: -z]), _ALL),
    "numpy.polyfit": (lambda x: np.polyfit(np.arange(float(np.size(x))), np.ravel(x), 2), ("ties", "smooth", "f32")),
    "numpy.unwrap": (lambda x: np.unwrap(x * 4.0), ("ties", "smooth", "f32", "empty")),
    "numpy.subtract.at": (lambda x: _accumulate(np.subtract, x), _ALL),
    "numpy.linalg.norm": (lambda x: np.linalg.norm(x) + np.linalg.norm(x, axis=-1) + np.linalg.norm(x, ord=1, axis=0).sum()
                          + np.linalg.norm(x, ord=np.inf, axis=-1) + np.linalg.norm(x, ord=3, axis=-1)
                          + (np.linalg.norm(x, ord=1) + np.linalg.norm(x, ord=-np.inf)) if np.ndim(x) == 2
                          else np.linalg.norm(x), ("ties", "smooth", "nan_inf", "f32", "0d")),
})


def _accumulate(ufunc, x):
    z = np.ones_like(np.ravel(x)) * 0.5
    ufunc.at(z, np.arange(np.size(x)) % 2, np.ravel(x) * np.ravel(x))
    return z


def P_(x):
    """x's primal (a condition or index computed from x is a constant)."""
    return x.value if hasattr(x, "value") else x


# cumprod over inputs holding +inf and -inf: a derivative element is a sum of infinities of both
# signs, whose result (NaN or one infinity) depends on the order of summation, and forward
# (tangents propagated along the scan) and reverse (adjoints accumulated against it) necessarily
# sum in different orders. No chain rule is involved; the mathematical value is undefined.
INF_MINUS_INF = {"cumprod-nan_inf", "multiply.accumulate-nan_inf"}


def _registry_cases():
    cases = []
    for name, specs in sorted(SPECS.items()):
        for i, (g, families) in enumerate(specs if isinstance(specs, list) else [specs]):
            for fam in families:
                for view, vf in VIEWS.items():
                    if view and fam not in ("smooth", "ties"):
                        continue
                    case_id = f"{name[6:]}-{fam}{'-' + view if view else ''}{'-' + str(i) if i else ''}"
                    marks = [pytest.mark.xfail(strict=True, reason="inf - inf summed in another "
                                               "order (INF_MINUS_INF)")] if case_id in INF_MINUS_INF else []
                    cases.append(pytest.param(name, g, fam, vf, id=case_id, marks=marks))
    return cases


def test_every_registered_function_is_in_the_suite():
    from gradtest import _rules

    ours = {name for f, rule in _rules.FUNCTIONS.items() if rule.__module__ == "gradtest._rules"
            for name in [_public(f)]}
    ours |= {_public(u, m) for (u, m), rule in _rules.UFUNCS.items() if rule.__module__ == "gradtest._rules"}
    assert ours - set(SPECS) == set()
    assert set(SPECS) - set(_rules.KINKS) == set()


def _public(f, method="__call__"):
    from gradtest._arraylike import public_name
    return public_name(f, method)


def _leaves(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("name, g, family, view", _registry_cases())
def test_registry_engines_agree(name, g, family, view):
    x = INPUTS[family]
    f = lambda v: g(view(v))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.asarray(f(x))
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        w = rng.uniform(0.5, 1.5, expected.shape).astype(expected.dtype)
        s = lambda v: np.sum(f(v) * w)  # noqa: E731
        got = primal(f, x)
        gf = forward_gradient(s, x).astype(x.dtype)  # as the backend returns it
        gr = reverse_gradient(s, x)
    # the primal is NumPy's, dtype included; bit for bit but where a view changes the
    # engines' summation order (the documented tolerance of 8 eps)
    assert got.dtype == expected.dtype and got.shape == expected.shape, name
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    if view:
        np.testing.assert_allclose(got, expected, rtol=8 * np.finfo(x.dtype).eps, atol=0)
    else:
        np.testing.assert_array_equal(got, expected)
    rtol = 1e-12 if x.dtype == np.float64 else 1e-6
    assert gf.dtype == gr.dtype == x.dtype
    _close_same_nan(gf, gr, rtol, f"{name}: forward vs reverse")
    if family in SMOOTH_FAMILIES:
        import gradtest

        (fd,) = gradtest.gradient(lambda v: s(v), x.astype(np.float64))
        np.testing.assert_allclose(gf, fd, rtol=1e-6 if x.dtype == np.float64 else 2e-3,
                                   atol=1e-8 if x.dtype == np.float64 else 1e-3)


@pytest.mark.parametrize("func", sorted(__import__("gradtest._rules", fromlist=["_"]).NONDIFFERENTIABLE,
                                        key=lambda f: f.__name__), ids=lambda f: f.__name__)
def test_nondifferentiable_functions_give_numpy_values(func):
    from gradtest.reverse import Tape, Tracked

    x = INPUTS["ties"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = func(x) if func.__name__ not in ("searchsorted", "digitize", "isclose", "allclose", "array_equal", "array_equiv", "left_shift", "right_shift") else None
    except TypeError:
        expected = None  # an integer-only ufunc: its refusal is NumPy's
    for a in (Dual(x, np.ones((1,) + x.shape)), Tracked.leaf(Tape(), x)):
        if expected is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.fix under NumPy 2.5
            got = func(a)
        assert not isinstance(got, (Dual, Tracked))
        for e, g in zip(_leaves(expected), _leaves(got)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_docs_table_is_generated_from_the_registry():
    # docs/forward.rst and docs/reverse.rst show this one table; regenerate it with
    # python -m gradtest._rules > docs/rules_table.inc
    from pathlib import Path

    from gradtest import _rules

    path = Path(__file__).resolve().parents[1] / "docs" / "rules_table.inc"
    if not path.parent.is_dir():
        pytest.skip("this copy of the tests has no docs/ next to it")
    assert path.read_text() == _rules.rules_table()
    for page in ("forward.rst", "reverse.rst"):
        text = (path.parent / page).read_text()
        assert "rules_table.inc" in text or ":ref:`kink-rules`" in text


ORDER2 = [
    ("prod_zero", lambda x: np.prod(x), np.array([1.5, 0.0, 2.0, -1.0])),
    ("prod_two_zeros", lambda x: np.prod(x), np.array([0.0, 0.7, 0.0])),
    ("cumprod_zero", lambda x: np.sum(np.cumprod(x) ** 2), np.array([1.5, 0.0, 2.0, -1.0, 0.5])),
    ("tril_fill", lambda x: np.sum(np.tril(x) ** 3), np.arange(1.0, 10.0).reshape(3, 3) / 5),
    ("deg2rad_pointwise", lambda x: np.sum(np.sin(np.deg2rad(x * 40.0))), np.array([0.3, 1.2, -0.7])),
    ("max_weights", lambda x: np.max(x) * np.sum(x * x), np.array([0.3, 1.2, -0.7])),
    ("einsum_chain", lambda x: np.einsum("ij,jk,ki->", x, x, x), np.arange(1.0, 5.0).reshape(2, 2) / 3),
    ("std", lambda x: np.std(x) * np.sum(x), np.array([0.3, 1.2, -0.7, 0.1])),
    ("histogram_density", lambda x: np.sum(np.histogram(x, bins=3, weights=x * x, density=True)[0] ** 2),
     np.array([0.3, 1.2, -0.7, 0.1, 0.9])),
    ("bincount_weights", lambda x: np.sum(np.bincount([0, 2, 2, 1, 2], weights=x) ** 3), np.array([0.3, 1.2, -0.7, 0.1, 0.9])),
    ("unique", lambda x: np.sum(np.unique(x) ** 3 * np.arange(4.0)), np.array([0.3, 1.2, -0.7, 0.1])),
]


@pytest.mark.parametrize("name, f, x", ORDER2, ids=[c[0] for c in ORDER2])
def test_rules_second_order(name, f, x):
    # H v by reverse over reverse equals the central difference of the reverse gradient
    from gradtest.reverse import hvp

    v = np.random.default_rng(3).standard_normal(x.shape)
    _, (hv,) = hvp(f, (x,), (v,))
    h = 1e-6
    fd = (reverse_gradient(f, x + h * v) - reverse_gradient(f, x - h * v)) / (2 * h)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-6)


def test_pointwise_partials_from_values_refuse_second_order():
    # a pointwise rule whose partials depend on x cannot be differentiated again: no silent
    # wrong second derivative, in hvp and in check_gradients at order 2
    from gradtest import _primitives as P
    from gradtest.reverse import hvp

    def softplus(x):
        v = P.value(x)
        return P.pointwise(np.logaddexp(0.0, v), [x], [1.0 / (1.0 + np.exp(-v))], "my.softplus")

    x = np.array([0.3, -1.2])
    (g,) = gradtest_gradient(lambda x: np.sum(softplus(x)), x)
    np.testing.assert_allclose(g, 1.0 / (1.0 + np.exp(-x)), rtol=1e-14)
    with pytest.raises(NotImplementedError, match="second order of my.softplus is not supported"):
        hvp(lambda x: np.sum(softplus(x)), (x,), (np.ones(2),))


def gradtest_gradient(f, x):
    import gradtest

    gf = gradtest.gradient(f, x, backend="forward")
    gr = gradtest.gradient(f, x, backend="reverse")
    np.testing.assert_allclose(gf[0], gr[0], rtol=1e-12)
    return gr
