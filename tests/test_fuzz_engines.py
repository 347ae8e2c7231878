"""A bounded differential fuzz of the two AD engines: random compositions of supported NumPy
functions, where forward and reverse must agree with each other (same NaN positions) and with
NumPy's primal. Derandomized, so CI runs the same programs every time."""

import warnings

import numpy as np
from hypothesis import given, settings, strategies as st

from gradtest.forward import Dual, jvp
from gradtest.reverse import vjp

# each step maps an array of any shape (ndim >= 1) to an array, so that any sequence composes
STEPS = {
    "sin": np.sin,
    "tanh": np.tanh,
    "exp_tanh": lambda x: np.exp(np.tanh(x)),
    "square": np.square,
    "abs": np.abs,
    "sqrt_abs": lambda x: np.sqrt(np.abs(x)),
    "log1p_sq": lambda x: np.log1p(x * x),
    "scale": lambda x: 2.5 * x - 0.5,
    "times_flip": lambda x: x * np.flip(x),
    "maximum_half": lambda x: np.maximum(x, 0.5),
    "clip": lambda x: np.clip(x, -0.5, 0.8),
    "where": lambda x: np.where(_p(x) > 0.3, x, -x * x),
    "transpose": lambda x: np.transpose(x),
    "reverse": lambda x: x[::-1],
    "ravel": np.ravel,
    "sort": lambda x: np.sort(x, axis=-1),
    "cumsum": lambda x: np.cumsum(x, axis=-1),
    "cumprod": lambda x: np.cumprod(x, axis=-1),
    "concat": lambda x: np.concatenate([x, x[..., :1] * 3.0], axis=-1),
    "tile": lambda x: np.tile(x, 2),
    "sum_last": lambda x: np.sum(x, axis=-1, keepdims=True) * np.ones(np.shape(_p(x))[-1]),
    "mean_centre": lambda x: x - np.mean(x, axis=-1, keepdims=True),
    "max_keep": lambda x: x * np.max(x, axis=-1, keepdims=True),
    "prod_keep": lambda x: x + np.prod(x, axis=-1, keepdims=True),
    "std_keep": lambda x: x * np.std(x, axis=-1, keepdims=True),
    "norm": lambda x: x / (1.0 + np.linalg.norm(x, axis=-1, keepdims=True)),
    "outer_trace": lambda x: x * np.trace(np.outer(np.ravel(x), np.ravel(x))),
    "matmul": lambda x: np.reshape(x, (-1, 1)) @ np.ones((1, 2)),
    "einsum": lambda x: np.einsum("...i,...i->...", x, x)[..., None] + x,
    "take": lambda x: np.take(x, [0, 0, -1], axis=-1),
}


def _p(x):
    return x.value if hasattr(x, "value") else x


def _run(program, x):
    for name in program:
        x = STEPS[name](x)
    return x


@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(
    program=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=5),
    shape=st.sampled_from([(3,), (2, 3), (3, 2)]),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_random_compositions_agree(program, shape, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, shape)
    if ties:
        x = np.round(x * 2) / 2  # repeated values and zeros
    f = lambda v: _run(program, v)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.asarray(f(x))
        w = rng.uniform(0.5, 1.5, expected.shape)
        s = lambda v: np.sum(f(v) * w)  # noqa: E731
        value, _ = jvp(f, [x], [np.zeros_like(x)])
        d = Dual(x, np.eye(x.size).reshape((x.size,) + x.shape))
        out = s(d)
        gf = out.tangents.reshape(x.shape) if isinstance(out, Dual) else np.zeros(x.shape)
        _, (gr,) = vjp(s, (x,), None)
    np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-13, atol=0,
                               err_msg=f"primal of {program}")
    np.testing.assert_array_equal(np.isnan(gf), np.isnan(gr), err_msg=f"NaN positions of {program}")
    np.testing.assert_allclose(gf, gr, rtol=1e-10, atol=1e-12, err_msg=f"gradient of {program}")
