"""The engines' large-array and threading paths (issue 13): what they promise beyond speed.

Timings are never asserted here (they live in benchmarks/); these tests check the behaviour the
fast paths must keep: the core's BLAS thread count, one call of f per gradient(), and exact
gradients through the buffers the sweep takes from huge-page memory.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gradtest
from gradtest import _forward

PACKAGE_DIR = os.path.dirname(os.path.dirname(gradtest.__file__))


def _core_threads_in_child(env_value: str | None) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_DIR + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("GRADTEST_BLAS_THREADS", None)
    if env_value is not None:
        env["GRADTEST_BLAS_THREADS"] = env_value
    env.pop("OPENBLAS_NUM_THREADS", None)  # the core's default must not depend on it
    code = "from gradtest import _reverse, _forward; print(_forward.blas_threads(0))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return int(out.stdout.strip())


def test_core_blas_starts_single_threaded():
    # two OpenBLAS pools (NumPy's and the core's) on the same cores slow each other down
    assert _core_threads_in_child(None) == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS caps the count at the number of cores")
def test_gradtest_blas_threads_sets_the_core_pool():
    assert _core_threads_in_child("2") == 2


@pytest.mark.parametrize("bad", ["0", "-3", "two", "2x", ""])
def test_invalid_gradtest_blas_threads_falls_back_to_one(bad):
    assert _core_threads_in_child(bad) == 1


def test_blas_threads_query_does_not_change_the_count():
    before = _forward.blas_threads(0)
    assert _forward.blas_threads(0) == before


@pytest.mark.parametrize("backend", ["reverse", "forward"])
def test_gradient_calls_f_once_per_engine_pass(backend):
    calls = []

    def f(x):
        calls.append(type(x).__name__)
        return np.sum(np.sin(x) * x)

    x = np.linspace(0.1, 0.9, 5)
    (g,) = gradtest.gradient(f, x, backend=backend)
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x), rtol=1e-13)
    # no plain evaluation before the engine's own: every call gets the engine's array type
    assert calls and all(name in ("Tracked", "Dual") for name in calls), calls
    if backend == "reverse":
        assert len(calls) == 1


@pytest.mark.parametrize("backend", ["reverse", "forward", "finite_diff"])
def test_gradient_still_refuses_non_scalar_f(backend):
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"scalar-valued function, f returned ndarray of shape \(3,\)"):
        gradtest.gradient(lambda v: v * 2.0, x, backend=backend)
    with pytest.raises(ValueError, match="scalar-valued"):
        gradtest.gradient(lambda v: np.sum(v) > 0, x, backend=backend)
    with pytest.raises(TypeError, match="NoneType"):
        gradtest.gradient(lambda v: None, x, backend=backend)


def test_gradient_matches_vjp_for_a_constant_output():
    x = np.ones(4)
    (g,) = gradtest.gradient(lambda v: 3.0, x, backend="reverse")
    np.testing.assert_array_equal(g, np.zeros(4))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sweep_buffers_above_the_huge_page_size_are_exact(dtype):
    # 2^20 elements: every adjoint and contribution of the sweep is at least 4 MiB (float32) and
    # takes the huge-page path, zeroed (sum, broadcast, matmul) and not (elementwise, cast)
    rng = np.random.default_rng(0)
    n = 1 << 20
    x = rng.uniform(0.5, 1.5, n).astype(dtype)
    w = rng.uniform(-1, 1, (n // 256, 256)).astype(dtype)
    b = rng.uniform(-1, 1, 256).astype(dtype)

    def f(x, w, b):
        y = np.exp(x) * x + np.sin(x) * x
        z = (w * b).sum(axis=0) + y.reshape(n // 256, 256)[0]
        return np.sum(y) + np.sum(z * z)

    _, (gx, gw, gb) = gradtest.vjp(f, (x, w, b), None)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    z = (w64 * b64).sum(axis=0) + (np.exp(x64) * x64 + np.sin(x64) * x64).reshape(n // 256, 256)[0]
    dy = np.exp(x64) * (x64 + 1) + np.cos(x64) * x64 + np.sin(x64)
    want_x = dy.copy()
    want_x[:256] += 2 * z * dy[:256]
    # float32: z sums 4096 rounded products; uninitialised or unzeroed memory would be far off
    rtol = 1e-12 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(gx, want_x, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gw, np.broadcast_to(2 * z * b64, w.shape), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gb, (2 * z * w64).sum(axis=0), rtol=rtol * 10, atol=rtol * 10)


# ---- forward mode in directional checks ------------------------------------------------------

def _counting(f):
    """f, recording the number of tangent directions of each Dual call."""
    from gradtest.forward import Dual

    seen = []

    def wrapped(x):
        if isinstance(x, Dual):
            seen.append(x.tangents.shape[0])
        return f(x)

    return wrapped, seen


def test_forward_in_directional_mode_runs_one_pass_per_direction_block():
    x = np.linspace(0.2, 1.4, 300)
    f, seen = _counting(lambda v: np.sum(np.sin(v) * v + np.exp(-v)))
    report = gradtest.check_gradients(f, x, backends=["forward"], mode="directional", n_directions=12)
    assert report.outcomes["forward"].status == "pass", report
    assert report.outcomes["forward"].n_compared == 12
    # the 12 directions and nothing else: not 300 unit vectors
    assert sum(seen) == 12, seen


def test_forward_in_directional_mode_catches_and_locates_a_wrong_element():
    from gradtest.forward import Dual

    x = np.linspace(0.2, 1.4, 300)
    bad = 137

    def f(v):
        y = np.sin(v)
        if isinstance(y, Dual):  # a wrong forward rule in one element, by 1e-3 relative
            t = np.array(y.tangents)
            t[..., bad] *= 1.0 + 1e-3
            y = Dual(np.asarray(y.value), t)
        return np.sum(y * y)

    counted, seen = _counting(f)
    report = gradtest.check_gradients(counted, x, backends=["forward"], mode="directional", n_directions=16)
    outcome = report.outcomes["forward"]
    assert outcome.status == "fail", report
    assert outcome.worst is not None and outcome.worst.index == (bad,), outcome.message
    # the directions, then single elements for the located suspects only
    assert sum(seen) <= 16 + 8, seen


def test_forward_in_directional_mode_with_several_arguments_and_float32():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.5, (20, 5)).astype(np.float32)
    b = {"w": rng.uniform(0.5, 1.5, 5)}
    report = gradtest.check_gradients(lambda a, b: np.sum(np.tanh(a @ b["w"])) + np.sum(b["w"] ** 3), a, b,
                                      backends=["forward", "reverse"], mode="directional", n_directions=10)
    assert report.outcomes["forward"].status == "pass", report
    assert report.outcomes["reverse"].status == "pass", report


def test_forward_in_directional_mode_with_an_output_that_ignores_the_input():
    report = gradtest.check_gradients(lambda v: np.sum(v) * 0.0 + 1.0, np.ones(50), backends=["forward"],
                                      mode="directional", n_directions=4)
    assert report.outcomes["forward"].status == "pass", report


def test_taking_an_adjoint_hands_over_the_buffer_once():
    from gradtest import _reverse
    from gradtest.reverse import Tracked

    tape = _reverse.Tape()
    try:
        base = _reverse.alloc_live()
        x = Tracked.leaf(tape, np.linspace(0.1, 1.0, 7))
        y = np.sum(np.exp(x) * x)
        tape.backward(y.node, np.ones(()))
        copy = tape.adjoint(x.node)
        taken = tape.adjoint(x.node, True)
        np.testing.assert_array_equal(taken, copy)
        assert taken.flags.writeable and taken.flags.owndata is False
        # the tape forgot it: a second take (or read) sees no gradient, until the next sweep
        assert tape.adjoint(x.node, True) is None
        assert tape.adjoint(x.node) is None
        tape.backward(y.node, np.ones(()))
        np.testing.assert_array_equal(tape.adjoint(x.node), copy)
        del taken
        with pytest.raises(TypeError, match="1 or 2 arguments"):
            tape.adjoint(x.node, True, 3)
    finally:
        tape.release()
    # the taken buffer was freed with its array
    assert _reverse.alloc_live() <= base


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch,m,k,n", [(1, 3, 4, 5), (2, 1, 7, 1), (3, 4, 0, 2), (0, 2, 2, 2), (1, 0, 3, 4)])
def test_core_gemm_is_numpys_matmul(dtype, batch, m, k, n):
    from gradtest import _reverse

    rng = np.random.default_rng(4)
    a = rng.standard_normal((batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, k, n)).astype(dtype)
    c = _reverse.gemm(a, b, batch, m, k, n).reshape(batch, m, n)
    assert c.dtype == dtype
    np.testing.assert_allclose(c, np.matmul(a, b), rtol=1e-5 if dtype == np.float32 else 1e-13,
                               atol=1e-5 if dtype == np.float32 else 1e-13)


def test_core_gemm_refuses_what_it_cannot_multiply():
    from gradtest import _reverse

    a, b = np.ones((2, 3)), np.ones((3, 4))
    with pytest.raises(ValueError, match="sizes"):
        _reverse.gemm(a, b, 1, 2, 3, 5)
    with pytest.raises(TypeError, match="one dtype"):
        _reverse.gemm(a, b.astype(np.float32), 1, 2, 3, 4)
    with pytest.raises(TypeError, match="C-contiguous"):
        _reverse.gemm(np.ones((3, 2)).T, b, 1, 2, 3, 4)
    with pytest.raises(ValueError, match=">= 0"):
        _reverse.gemm(a, b, 1, -2, 3, 4)


def test_recorded_matmul_values_and_gradients_match_numpy():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 4))
    x = rng.standard_normal((3, 5, 6))

    def f(w):
        return np.sum(np.tanh(x @ w) ** 2)

    out, (g,) = gradtest.vjp(f, (w,), None)
    np.testing.assert_allclose(out, f(w), rtol=1e-13)
    t = np.tanh(x @ w)
    np.testing.assert_allclose(g, np.einsum("bmk,bmn->kn", x, 2 * t * (1 - t * t)), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- operands the tape keeps

def _op_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.linspace(0.2, 0.7, 7)
    b = np.linspace(0.35, 0.95, 7)
    return (a + 1.5 if name == "arccosh" else a), b


def _grads_on_tape(name: str, args: tuple, order2: bool) -> list[np.ndarray]:
    from gradtest._reverse import Tape
    from gradtest.reverse import Tracked

    tape = Tape()
    tape.python_recording = order2
    try:
        leaves = [Tracked.leaf(tape, v) if track else None for v, track in args]
        vals = [leaf if leaf is not None else v for leaf, (v, _) in zip(leaves, args)]
        out = np.sum(getattr(np, name)(*vals) * np.linspace(1.0, 2.0, 7))
        tape.backward(out.node, np.ones(()))
        return [tape.adjoint(leaf.node) for leaf in leaves if leaf is not None]
    finally:
        tape.release()


@pytest.mark.parametrize("name", [n for n in _forward.op_names() if n != "sign"])
def test_operands_the_tape_drops_are_never_read(name):
    # A node keeps only the operands its partials read (the op table's GT_READS_* bits); with
    # python_recording it keeps those of the second partials too, a superset. A dropped operand
    # reads as NaN, so a missing bit shows as a NaN or a difference between the two tapes.
    a, b = _op_inputs(name)
    arity = getattr(np, name).nin
    cases = [((a, True),)] if arity == 1 else [((a, True), (b, True)), ((a, True), (b, False)),
                                               ((a, False), (b, True))]
    for args in cases:
        trimmed, kept = _grads_on_tape(name, args, False), _grads_on_tape(name, args, True)
        for g, h in zip(trimmed, kept):
            assert np.all(np.isfinite(g)), (name, args)
            np.testing.assert_array_equal(g, h)


@pytest.mark.parametrize("name", [n for n in _forward.op_names() if n != "sign"])
def test_order2_keeps_what_the_second_partials_read(name):
    from gradtest.reverse import gradient_reverse, hvp

    a, b = _op_inputs(name)
    fn = getattr(np, name)
    w = np.linspace(1.0, 2.0, 7)
    if fn.nin == 1:
        f = lambda x: np.sum(fn(x) * w)  # noqa: E731
        x0, v = a, np.linspace(-1.0, 1.0, 7)
    else:
        f = lambda x: np.sum(fn(x[:7], x[7:]) * w)  # noqa: E731
        x0, v = np.concatenate([a, b]), np.linspace(-1.0, 1.0, 14)
    _, (h,) = hvp(f, (x0,), (v,))
    eps = 1e-6
    fd = (gradient_reverse(f, x0 + eps * v)[0] - gradient_reverse(f, x0 - eps * v)[0]) / (2 * eps)
    assert np.all(np.isfinite(h))
    np.testing.assert_allclose(h, fd, rtol=1e-5, atol=1e-6)


def test_a_recorded_chain_releases_the_operands_its_sweep_does_not_read():
    import gc
    import weakref

    from gradtest._reverse import Tape
    from gradtest.reverse import Tracked

    for order2, kept in ((False, False), (True, True)):
        tape = Tape()
        tape.python_recording = order2
        try:
            x = Tracked.leaf(tape, np.linspace(0.1, 0.8, 5))
            s = np.sin(x * 1.1)  # sin's partial reads its input; its second partial its output
            out_ref = weakref.ref(s.value)
            z = np.tanh(s)
            del s
            gc.collect()
            assert (out_ref() is not None) is kept
            total = np.sum(z)
            tape.backward(total.node, np.ones(()))
            u = 1.1 * x.value
            np.testing.assert_allclose(tape.adjoint(x.node), (1 - np.tanh(np.sin(u)) ** 2) * np.cos(u) * 1.1,
                                       rtol=1e-13)
        finally:
            tape.release()


# ---------------------------------------------------------------------- leaves without a copy

def test_a_contiguous_leaf_is_a_read_only_view_of_the_callers_array():
    from gradtest import _reverse
    from gradtest.reverse import Tracked

    a = np.linspace(0.0, 1.0, 12).reshape(3, 4)
    tape = _reverse.Tape()
    try:
        leaf = Tracked.leaf(tape, a)
        assert np.shares_memory(leaf.value, a)
        assert not leaf.value.flags.writeable
        with pytest.raises(ValueError):
            leaf.value[0, 0] = 5.0  # nothing recorded can write to the caller's array
        # a non-contiguous or converted input is copied into a C-contiguous array of its own
        strided = Tracked.leaf(tape, a[:, ::2])
        ints = Tracked.leaf(tape, np.arange(4))
        assert not np.shares_memory(strided.value, a) and strided.value.flags.c_contiguous
        assert ints.value.dtype == np.float64
    finally:
        tape.release()
    assert a.flags.writeable and a[0, 0] == 0.0


@pytest.mark.parametrize("f", [lambda x: x, lambda x: x.reshape(-1), lambda x: x.T, lambda x: x[1:],
                               lambda x: (x, np.sum(x) * x)],
                         ids=["identity", "reshape", "transpose", "slice", "tuple"])
def test_vjp_results_never_alias_the_callers_arrays(f):
    x = np.linspace(0.5, 1.5, 6).reshape(2, 3)
    before = x.copy()
    out = f(x)
    cot = tuple(np.ones(np.shape(o)) for o in out) if isinstance(out, tuple) else np.ones(np.shape(out))
    primal, (g,) = gradtest.vjp(f, (x,), cot)
    np.testing.assert_array_equal(x, before)  # the caller's array is unchanged ...
    assert x.flags.writeable
    expected_primal = [np.array(p, copy=True) for p in (primal if isinstance(primal, tuple) else (primal,))]
    expected_g = g.copy()
    for p in (primal if isinstance(primal, tuple) else (primal,)):
        assert not np.shares_memory(p, x) and p.flags.writeable
    x[...] = -7.0  # ... and changing it later cannot reach a result already returned
    for p, e in zip(primal if isinstance(primal, tuple) else (primal,), expected_primal):
        np.testing.assert_array_equal(p, e)
    np.testing.assert_array_equal(g, expected_g)


def test_gradient_of_a_viewed_leaf_is_unchanged_by_a_later_write():
    x = np.linspace(0.1, 0.9, 1000)
    (g,) = gradtest.gradient(lambda v: np.sum(np.sin(v) * v), x, backend="reverse")
    expected = np.cos(x) * x + np.sin(x)
    x *= 3.0
    np.testing.assert_allclose(g, expected, rtol=1e-14)
