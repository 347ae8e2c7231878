"""The "forward" backend end to end: registry, check_gradients/test_gradients, chunking, limits."""

from __future__ import annotations

import numpy as np
import pytest

import gradtest
from gradtest import Dual, check_gradients, gradient, test_gradients
from gradtest._problem import GradientProblem, describe_output
from gradtest._tree import flatten_args
from gradtest.backends import get_backend
from gradtest.forward import MAX_DEFAULT_SIZE


def mixed(w, b, x, *, scale=1.0):
    """A small network loss mixing many ops: products, broadcasting, reductions, indexing."""
    h = np.tanh(x @ w + b)
    z = np.concatenate([h, np.maximum(h, 0.1) ** 2], axis=1)
    logits = z[:, ::2] - np.max(z, axis=1, keepdims=True)
    soft = np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)
    reg = np.linalg.norm(w) + np.sqrt(np.mean(b ** 2) + 1.0) + np.var(w.T.reshape(-1), ddof=1)
    pick = soft[np.arange(soft.shape[0]), [0, 1, 2, 0, 1]]
    return scale * (-np.sum(np.log(pick)) + 0.1 * reg + np.prod(np.cos(b[:2]))) + np.trace(w[:3, :3])


def _args(rng):
    return rng.standard_normal((4, 6)) * 0.5, rng.standard_normal(6) * 0.1, rng.standard_normal((5, 4))


def test_registered_and_default():
    backend = get_backend("forward")
    assert backend.default
    assert "forward" in gradtest.available_backends()


def test_mixed_function_through_test_gradients(rng):
    w, b, x = _args(rng)
    report = test_gradients(mixed, w, b, x)
    assert report.outcomes["forward"].status == "pass"


def test_array_output_and_nested_args(rng):
    def f(params, x):
        return np.sin(params["w"] @ x) * params["s"][0] + np.cumsum(params["w"], axis=1)[:, :1]

    params = {"w": rng.standard_normal((3, 4)), "s": rng.standard_normal(2)}
    report = check_gradients(f, params, rng.standard_normal((4, 2)), backends=["forward"])
    assert report.outcomes["forward"].status == "pass", str(report)


def test_float32_inputs(rng):
    w, b, x = (a.astype(np.float32) for a in _args(rng))
    report = check_gradients(mixed, w, b, x, backends=["forward"])
    assert report.outcomes["forward"].status == "pass", str(report)


def test_gradient_function(rng):
    w, b, x = _args(rng)
    g_fwd = gradient(mixed, w, b, x, backend="forward")
    g_fd = gradient(mixed, w, b, x)
    for a, e in zip(g_fwd, g_fd):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


def _problem(f, *args, **options):
    flat = flatten_args(args)
    problem = GradientProblem(f, {}, flat, describe_output(0.0, np.random.default_rng(0)), options=options)
    problem.output = describe_output(f(*problem.fresh_args()), np.random.default_rng(0))
    return problem


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 1000])
def test_chunk_sizes_agree(rng, chunk):
    w, b, x = _args(rng)
    grads = get_backend("forward").compute(_problem(mixed, w, b, x, forward_chunk_size=chunk))
    reference = gradient(mixed, w, b, x)
    for g, r, leaf in zip(grads, reference, (w, b, x)):
        assert g.shape == leaf.shape
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)


def test_passes_are_counted(rng):
    calls = []

    def f(x):
        calls.append(type(x))
        return np.sum(x ** 3)

    x = rng.standard_normal(10)
    get_backend("forward").compute(_problem(f, x, forward_chunk_size=4))
    assert calls.count(Dual) == 3  # ceil(10 / 4) passes


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True])
def test_bad_chunk_size(rng, bad):
    with pytest.raises(ValueError, match="forward_chunk_size"):
        get_backend("forward").compute(_problem(lambda x: np.sum(x), rng.standard_normal(3), forward_chunk_size=bad))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_blas_threads(rng, bad):
    with pytest.raises(ValueError, match="forward_blas_threads"):
        get_backend("forward").compute(_problem(lambda x: np.sum(x), rng.standard_normal(3), forward_blas_threads=bad))


def test_blas_threads_restored(rng):
    from gradtest import _forward

    before = _forward.blas_threads(3)
    seen = []

    def f(x):
        seen.append(_forward.blas_threads(0))
        return np.sum(x @ x.T)

    try:
        get_backend("forward").compute(_problem(f, rng.standard_normal((3, 2)), forward_blas_threads=1))
        assert set(seen[1:]) == {1}  # seen[0] is the plain call that describes the output
        assert _forward.blas_threads(0) == 3
    finally:
        _forward.blas_threads(before)


def test_constant_output_gives_zero_gradient():
    grads = get_backend("forward").compute(_problem(lambda x: 3.0, np.ones(4)))
    np.testing.assert_array_equal(grads[0], np.zeros(4))


def test_applies_limits_size():
    backend = get_backend("forward")
    assert backend.applies(_problem(lambda x: np.sum(x), np.ones(MAX_DEFAULT_SIZE)))
    assert not backend.applies(_problem(lambda x: np.sum(x), np.ones(MAX_DEFAULT_SIZE + 1)))
    with pytest.warns(gradtest.NoBackendWarning):  # forward was the only default backend left
        check_gradients(lambda x: np.sum(x ** 2), np.ones(MAX_DEFAULT_SIZE + 1),
                        skip_backends=[b for b in gradtest.available_backends() if b != "forward"])


def test_unsupported_function_is_an_error_outcome(rng):
    def f(x):
        return np.sum(np.trim_zeros(x))

    report = check_gradients(f, rng.standard_normal((3, 3)) + 3 * np.eye(3), backends=["forward"])
    outcome = report.outcomes["forward"]
    assert outcome.status == "error"
    assert "numpy.trim_zeros" in outcome.message
    with pytest.raises(AssertionError):
        test_gradients(f, rng.standard_normal((3, 3)) + 3 * np.eye(3), backends=["forward"])


def test_asarray_inside_f_keeps_tracking_and_float_is_an_error_outcome(rng):
    x = rng.standard_normal(3)
    report = check_gradients(lambda x: np.sum(np.asarray(x) ** 2), x, backends=["forward"])
    assert report.outcomes["forward"].status == "pass"
    report = check_gradients(lambda x: float(x[0]) * np.sum(x), x, backends=["forward"])
    assert report.outcomes["forward"].status == "error"
    assert "drop its derivatives" in report.outcomes["forward"].message


def test_wrong_derivative_would_fail(rng, monkeypatch):
    # guard against a backend that cannot fail: corrupt one rule and see the check catch it
    from gradtest import forward

    # both routes to the rule: the C fast path (_FAST_UFUNCS) and the Python rule it falls back to
    monkeypatch.setitem(forward._UFUNC_RULES, np.sin, forward._UFUNC_RULES[np.cos])
    monkeypatch.setitem(forward._FAST_UFUNCS, np.sin, forward._FAST_UFUNCS[np.cos])
    report = check_gradients(lambda x: np.sum(np.sin(x)), rng.standard_normal(4), backends=["forward"])
    assert report.outcomes["forward"].status in ("fail", "error")
    # a float32 constant with a float64 dual leaves the fast path for the Python rule it was given:
    # a wrong rule there is caught too
    monkeypatch.undo()
    index, _ = forward._FAST_UFUNCS[np.multiply]
    monkeypatch.setitem(forward._FAST_UFUNCS, np.multiply, (index, forward._UFUNC_RULES[np.add]))
    c = np.full(4, 2.0, dtype=np.float32)
    report = check_gradients(lambda x: np.sum(np.multiply(x, c)), rng.standard_normal(4), backends=["forward"])
    assert report.outcomes["forward"].status in ("fail", "error")


def test_callers_arrays_untouched(rng):
    w, b, x = _args(rng)
    copies = [a.copy() for a in (w, b, x)]
    gradient(mixed, w, b, x, backend="forward")
    for a, c in zip((w, b, x), copies):
        np.testing.assert_array_equal(a, c)
