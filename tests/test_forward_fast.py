"""The C fast paths of gradtest.Dual (_forward.ufunc/array_ufunc/getitem/reshape and the
same-shape kernel) against the Python rules and the strided kernel they replace: bit-identical."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradtest import _forward, forward
from gradtest.forward import Dual


def _same(x, y):
    assert type(x) is Dual and type(y) is Dual
    assert x.value.dtype == y.value.dtype and x.tangents.dtype == y.tangents.dtype
    assert x.value.shape == y.value.shape and x.tangents.shape == y.tangents.shape
    np.testing.assert_array_equal(x.value, y.value)
    np.testing.assert_array_equal(x.tangents, y.tangents)


def _dual(rng, shape, k=3, dtype=np.float64):
    return Dual(rng.uniform(0.5, 1.5, shape).astype(dtype), rng.standard_normal((k,) + shape).astype(dtype))


def _fast_and_rule(ufunc, *ops):
    index, rule = forward._FAST_UFUNCS[ufunc]
    return _forward.ufunc(index, ufunc, rule, *ops), rule(*ops)


BINARY = [np.add, np.subtract, np.multiply, np.divide, np.power, np.maximum, np.arctan2, np.hypot]


@pytest.mark.parametrize("ufunc", BINARY, ids=lambda u: u.__name__)
def test_fast_binary_matches_rule(ufunc):
    rng = np.random.default_rng(0)
    a, b = _dual(rng, (4, 5)), _dual(rng, (4, 5))
    row, scalar = _dual(rng, (5,)), _dual(rng, ())
    f32 = _dual(rng, (4, 5), dtype=np.float32)
    cases = [(a, b), (a, 2.5), (3, a), (a, rng.uniform(0.5, 1.5, (4, 5))), (a, row), (row, a),
             (scalar, a), (a, scalar), (scalar, scalar), (f32, 0.5), (2, f32), (f32, f32)]
    for ops in cases:
        _same(*_fast_and_rule(ufunc, *ops))


@pytest.mark.parametrize("ufunc", [np.sin, np.exp, np.sqrt, np.tanh, np.negative, np.absolute],
                         ids=lambda u: u.__name__)
def test_fast_unary_matches_rule(ufunc):
    rng = np.random.default_rng(1)
    for x in (_dual(rng, (6,)), _dual(rng, ()), _dual(rng, (2, 3), dtype=np.float32),
              _dual(rng, (4, 3)).T):
        _same(*_fast_and_rule(ufunc, x))
        _same(ufunc(x), forward._UFUNC_RULES[ufunc](x))  # through Dual.__array_ufunc__


def test_fast_path_falls_back_for_other_operands():
    rng = np.random.default_rng(2)
    a = _dual(rng, (4,))
    calls = []

    def rule(*ops):
        calls.append(ops)
        return "rule"

    index = forward._OP_INDEX["multiply"]
    for other in (np.ones(4, dtype=np.float32), 10**30, True, [1.0, 2.0, 3.0, 4.0], np.float64(2.0)):
        calls.clear()
        assert _forward.ufunc(index, np.multiply, rule, a, other) == "rule"
        assert calls == [(a, other)]
    # no Dual at all, and Duals of different dtypes
    assert _forward.ufunc(index, np.multiply, rule, np.ones(2), 2.0) == "rule"
    assert _forward.ufunc(index, np.multiply, rule, a, _dual(rng, (4,), dtype=np.float32)) == "rule"
    # and the real rules give NumPy's promotions through the operators
    assert (a * np.ones(4, dtype=np.float32)).dtype == np.float64
    assert (_dual(rng, (4,), dtype=np.float32) * np.ones(4)).dtype == np.float64
    assert np.float_power(_dual(rng, (4,), dtype=np.float32), 2.0).dtype == np.float64


def test_fast_path_errors():
    rng = np.random.default_rng(3)
    a, b = _dual(rng, (4,), k=2), _dual(rng, (4,), k=3)
    with pytest.raises(ValueError, match="bt"):
        a + b
    with pytest.raises(ValueError):
        a + _dual(rng, (5,))
    index, rule = forward._FAST_UFUNCS[np.add]
    with pytest.raises(TypeError, match="takes 2"):
        _forward.ufunc(index, np.add, rule, a)
    with pytest.raises(ValueError, match="op-table index"):
        _forward.ufunc(-1, np.add, rule, a, a)
    with pytest.raises(TypeError, match="4 or 5"):
        _forward.ufunc(index, np.add)
    with pytest.raises(TypeError, match="cls"):
        _forward.register_dual(1, {}, print, print, print)
    class NoSlots:
        value = tangents = None

    with pytest.raises(TypeError, match="__slots__"):
        _forward.register_dual(NoSlots, {}, print, print, print)
    with pytest.raises(TypeError, match="callables"):
        _forward.register_dual(Dual, {}, 1, print, print)
    _same(a + a, forward._UFUNC_RULES[np.add](a, a))  # failed registrations changed nothing
    with pytest.raises(NotImplementedError, match="out="):
        np.add(a, a, out=np.empty(4))


def _strided(d):
    """A copy of d whose value and tangents are non-contiguous views (the strided kernel)."""
    v = np.empty(d.value.shape + (2,), dtype=d.dtype)[..., 0]
    t = np.empty(d.tangents.shape + (2,), dtype=d.dtype)[..., 0]
    v[...] = d.value
    t[...] = d.tangents
    assert not v.flags.c_contiguous or v.size <= 1
    return forward._make(v, t)


@pytest.mark.parametrize("n", [1, 7, 1500, 40000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_contiguous_kernel_matches_strided(n, dtype):
    rng = np.random.default_rng(n)
    k = 5
    a, b = _dual(rng, (n,), k, dtype), _dual(rng, (n,), k, dtype)
    a.value[::3] = 0.0  # sqrt'(0) = inf and maximum ties: the NaN-safe and tie rules
    b.value[::3] = 0.0
    a.tangents[:, ::2] = 0.0
    sa, sb = _strided(a), _strided(b)
    for f in (np.add, np.subtract, np.multiply, np.divide, np.maximum, np.power):
        with np.errstate(divide="ignore", invalid="ignore"):
            _same(f(a, b), f(sa, sb))
            _same(f(a, 2.0), f(sa, 2.0))
            _same(f(b.value, a), f(b.value, sa))
    for f in (np.sqrt, np.negative, np.positive, np.sin):
        with np.errstate(divide="ignore", invalid="ignore"):
            _same(f(a), f(sa))
    r = np.sqrt(a)
    assert np.all(np.isfinite(r.tangents[:, 0::6]))  # zero tangents at sqrt'(0) = inf stay 0
    assert np.all(r.tangents[:, 0::6] == 0)


def test_getitem_matches_python_path():
    rng = np.random.default_rng(4)
    for d in (_dual(rng, (6,)), _dual(rng, (5, 3)), _dual(rng, (4, 3)).T):
        for index in (0, 2, -1, -d.shape[0], slice(1, 4), slice(None, None, -2), slice(5, 1), slice(-100, 100)):
            _same(d[index], Dual._getitem(d, index))
        with pytest.raises(IndexError):
            d[d.shape[0]]
        with pytest.raises(IndexError):
            d[-d.shape[0] - 1]
        with pytest.raises(IndexError):
            d[2**70]
    with pytest.raises(IndexError):
        _dual(rng, ())[0]
    with pytest.raises(ValueError):
        _dual(rng, (6,))[::0]


def test_getitem_views_like_numpy():
    rng = np.random.default_rng(5)
    d = _dual(rng, (5, 3))
    row = d[1]  # a view, as NumPy's x[1] of a matrix
    row.value[0] = 42.0
    row.tangents[:, 0] = 7.0
    assert d.value[1, 0] == 42.0 and np.all(d.tangents[:, 1, 0] == 7.0)
    e = _dual(rng, (5,))
    item = e[1]  # a 0-d copy, as NumPy's scalar x[1] of a vector
    item.value[...] = 0.0
    assert e.value[1] != 0.0 and item.shape == () and item.tangents.shape == (3,)
    readonly = forward._make(np.ones(4), np.ones((2, 4)))
    readonly.value.flags.writeable = False
    assert not readonly[1:3].value.flags.writeable


def test_reshape_matches_python_path():
    rng = np.random.default_rng(6)
    d = _dual(rng, (4, 6))
    for shape in ((24,), (2, 12), (-1, 3), (2, 3, 4), ()):
        if shape == ():
            with pytest.raises(ValueError):
                d.reshape(shape)
            continue
        _same(d.reshape(shape), Dual._reshape_method(d, shape))
        _same(d.reshape(*shape), Dual._reshape_method(d, *shape))
    _same(d.T.reshape(24), Dual._reshape_method(d.T, 24))  # a copy, not a view
    _same(d.reshape(6, 4, order="F"), Dual._reshape_method(d, 6, 4, order="F"))
    with pytest.raises(ValueError):
        d.reshape(5, 5)
    with pytest.raises(TypeError):
        d.reshape("a")
    with pytest.raises(TypeError):
        d.reshape()
    with pytest.raises(ValueError):
        d.reshape((1,) * 64)


def test_fast_path_keeps_its_operands_while_python_code_runs():
    # a warning hook runs Python code inside the primal's ufunc call; rebinding the Dual's slots
    # there must not free the arrays the C code is using
    d = Dual(np.array([0.0, 1.0, 2.0]), np.ones((2, 3)))

    def hook(*args, **kwargs):
        d.value = np.full(3, 5.0)
        d.tangents = np.zeros((2, 3))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        r = np.log(d)
    assert r.value[0] == -np.inf and r.value[1] == 0.0
    assert np.all(r.tangents[:, 1] == 1.0) and np.all(r.tangents[:, 2] == 0.5)
