"""Reverse mode: random programs (against finite differences and forward mode), threads, functions
that raise mid-tape, reference counts, allocation failures and memory release."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import gradtest
from gradtest import Tracked, _reverse
from gradtest.reverse import gradient_reverse



def fd_gradient(f, args, h=1e-6):
    """Central differences of the scalar f with respect to every argument (plain NumPy)."""
    args = [np.array(a, dtype=np.float64) for a in args]
    grads = []
    for a in args:
        g = np.zeros_like(a)
        for j in np.ndindex(a.shape):
            old = a[j]
            a[j] = old + h
            up = float(f(*args))
            a[j] = old - h
            down = float(f(*args))
            a[j] = old
            g[j] = (up - down) / (2 * h)
        grads.append(g)
    return grads

# ---------------------------------------------------------------- a seeded random-program generator

_UNARY = [np.sin, np.cos, np.tanh, np.arctan, np.square,
          lambda a: np.sqrt(a * a + 1.0), lambda a: np.log1p(a * a), lambda a: np.exp(0.3 * a),
          lambda a: -a, lambda a: np.abs(a) + 0.0]
_BINARY = [np.add, np.subtract, np.multiply, lambda a, b: a / (b * b + 1.0),
           lambda a, b: np.hypot(a, b + 2.0), lambda a, b: np.arctan2(a, b + 3.0)]
_STRUCTURAL = [
    lambda a, b: (a @ b) * 0.25,
    lambda a, b: a.T,
    lambda a, b: a[::-1],
    lambda a, b: a[[0, 0, 2, 3]],
    lambda a, b: np.cumsum(a, axis=1) * 0.25,
    lambda a, b: np.concatenate([a[:2], b[2:]], axis=0),
    lambda a, b: np.where(getattr(a, "value", a) > 0, a, b * 0.5),
    lambda a, b: np.broadcast_to(np.mean(a, axis=0, keepdims=True), (4, 4)) + b,
    lambda a, b: a.reshape(2, 8).reshape(4, 4) * b[:, :1],
    lambda a, b: a * b[:1, :],
    lambda a, b: np.stack([a[0], b[1], a[2], b[3]]),
    lambda a, b: np.swapaxes(a, 0, 1) @ b * 0.25,
    lambda a, b: np.einsum("ij,jk->ik", a, b) * 0.25,
    lambda a, b: np.tile(a[:2, :2], (2, 2)) - b,
    lambda a, b: a - np.max(a, axis=1, keepdims=True),
    lambda a, b: np.prod(a[:, :2] + 1.5, axis=1, keepdims=True) * b,
]


def random_program(seed: int, steps: int = 8):
    """A function of two (4, 4) arrays composed of `steps` random ops (fixed by `seed`)."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(steps):
        kind = rng.integers(3)
        table = (_UNARY, _BINARY, _STRUCTURAL)[kind]
        plan.append((kind, int(rng.integers(len(table))), int(rng.integers(100)), int(rng.integers(100))))
    u = rng.standard_normal((4, 4))

    def f(x, y):
        pool = [x, y]
        for kind, op, i, j in plan:
            a, b = pool[i % len(pool)], pool[j % len(pool)]
            if kind == 0:
                pool.append(_UNARY[op](a))
            elif kind == 1:
                pool.append(_BINARY[op](a, b))
            else:
                pool.append(np.tanh(_STRUCTURAL[op](a, b)))
        return np.sum(pool[-1] * u) + 0.1 * np.sum(pool[-2])

    return f


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_match_finite_differences(seed):
    f = random_program(seed)
    rng = np.random.default_rng(1000 + seed)
    x, y = rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, (4, 4))
    rev = gradient_reverse(f, x, y)
    ref = fd_gradient(f, (x, y))
    for r, e in zip(rev, ref):
        np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_forward_and_reverse_agree(seed):
    if "forward" not in gradtest.available_backends():
        pytest.skip("the forward backend (gradtest.forward) is not available in this build")
    f = random_program(seed)
    rng = np.random.default_rng(2000 + seed)
    x, y = rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, (4, 4))
    fwd = gradtest.gradient(f, x, y, backend="forward")
    rev = gradtest.gradient(f, x, y, backend="reverse")
    for a, b in zip(fwd, rev):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- threads

def test_threads_record_separate_tapes():
    fns = [lambda x, k=k: np.sum(np.sin(x * (k + 1)) @ x.T) for k in range(4)]
    x = np.random.default_rng(3).uniform(-1, 1, (6, 6))
    expected = [gradient_reverse(f, x)[0] for f in fns]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(fns))

    def work(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(60):
                g = gradient_reverse(fns[k], x)[0]
                np.testing.assert_allclose(g, expected[k], rtol=0, atol=0)
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_large_sweeps_run_concurrently():
    # sweeps release the GIL; two threads sweeping large tapes at once still get their own results
    x = np.random.default_rng(4).uniform(-1, 1, 200_000)
    results = {}

    def work(k: int) -> None:
        results[k] = gradient_reverse(lambda x: np.sum(np.tanh(x * (k + 1)) ** 2), x)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        t = np.tanh(x * (k + 1))
        np.testing.assert_allclose(results[k], 2 * t * (1 - t * t) * (k + 1), rtol=1e-12)


# ---------------------------------------------------------------- release, leaks, failures

class Boom(Exception):
    pass


def test_tape_is_released_when_f_raises():
    w = np.linspace(0.1, 1.0, 50)
    escaped: list[Tracked] = []
    base_refs = sys.getrefcount(w)
    base_alloc = _reverse.alloc_live()

    def f(x):
        y = np.sin(x * w) @ np.ones(50)
        escaped.append(y)
        raise Boom("mid-tape")

    with pytest.raises(Boom):
        gradient_reverse(f, np.ones(50))
    assert escaped[0].tape.released
    escaped.clear()
    gc.collect()
    assert sys.getrefcount(w) == base_refs
    assert _reverse.alloc_live() == base_alloc
    report = gradtest.check_gradients(f, np.ones(50), backends=["reverse"])
    assert report.outcomes["reverse"].status == "error"
    assert _reverse.alloc_live() == base_alloc


def test_saved_values_are_freed_after_the_gradient():
    holder = {}

    def f(x):
        y = np.exp(x)
        holder["ref"] = weakref.ref(y.value)
        return np.sum(y * y)

    gradient_reverse(f, np.ones(1000))
    gc.collect()
    assert holder["ref"]() is None
    base = _reverse.alloc_live()
    for _ in range(3):
        gradient_reverse(lambda x: np.sum(np.cumprod(np.tanh(x)[::-1]) @ np.ones(10)), np.ones(10))
    assert _reverse.alloc_live() == base


def test_no_reference_leaks_over_many_calls():
    x = np.random.default_rng(5).uniform(-1, 1, (5, 5))
    const = np.ones((5, 5))

    def f(x):
        return np.sum(np.concatenate([x, const]) @ x + np.max(x, axis=0) + np.prod(x, axis=1))

    gradient_reverse(f, x)
    refs_x, refs_c = sys.getrefcount(x), sys.getrefcount(const)
    total = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    for _ in range(50):
        gradient_reverse(f, x)
    assert sys.getrefcount(x) == refs_x
    assert sys.getrefcount(const) == refs_c
    if total is not None:  # debug builds of CPython
        assert sys.gettotalrefcount() - total < 100


@pytest.mark.parametrize("fail_at", range(1, 12))
def test_allocation_failures_in_the_sweep_raise_memory_error(fail_at):
    tape = _reverse.Tape()
    try:
        base = _reverse.alloc_live()
        x = Tracked.leaf(tape, np.linspace(0.1, 1, 12).reshape(3, 4))
        y = np.sum(np.tanh(x @ x.T)[[0, 0, 1]] * 2.0 + np.cumsum(x, axis=0)[:, :3].sum() + x[:, :1])
        _reverse.alloc_fail_after(fail_at)
        try:
            tape.backward(y.node, np.ones(1))
            ok = True
        except MemoryError:
            ok = False
        finally:
            _reverse.alloc_fail_after(0)
        # the tape survives a failed sweep and can be swept again
        tape.backward(y.node, np.ones(1))
        g = tape.adjoint(x.node)
        ref = gradient_reverse(lambda v: np.sum(np.tanh(v @ v.T)[[0, 0, 1]] * 2.0
                                                + np.cumsum(v, axis=0)[:, :3].sum() + v[:, :1]),
                               np.linspace(0.1, 1, 12).reshape(3, 4))[0]
        np.testing.assert_allclose(g, ref)
        assert ok or fail_at >= 1
    finally:
        tape.release()
    assert _reverse.alloc_live() <= base


def test_tape_nbytes_reports_and_release_frees():
    tape = _reverse.Tape()
    x = Tracked.leaf(tape, np.ones(100))
    y = np.sum(np.sin(x))
    assert len(tape) == 3
    before = tape.nbytes
    tape.backward(y.node, np.ones(1))
    assert tape.nbytes >= before + 100 * 8  # the leaf's adjoint is kept
    tape.release()
    assert tape.nbytes == 0 and tape.released


def test_the_observed_flag_turns_the_c_fast_path_off_and_order_2_leaves_it_on():
    # the dispatch check (observed) needs every op to pass through Python; order 2
    # (python_recording) does not, since the tape records its own backward sweep. The two flags
    # are separate, so setting one leaves the other as it was
    tape = _reverse.Tape()
    assert tape.python_recording is False and tape.observed is False
    x = Tracked.leaf(tape, np.arange(3.0))
    opi = _reverse.op_indices()["multiply"]
    assert tape.ufunc(np.multiply, opi, False, x, x) is not None  # the fast path takes it
    tape.observed = True
    assert tape.observed is True and tape.python_recording is False
    assert tape.ufunc(np.multiply, opi, False, x, x) is None  # declined: Python records it
    y = x * x  # the general path records it instead
    assert isinstance(y, Tracked) and np.array_equal(y.value, np.arange(3.0) ** 2)
    tape.observed = False
    tape.python_recording = True
    assert tape.python_recording is True and tape.observed is False
    assert tape.ufunc(np.multiply, opi, False, x, x) is not None
    tape.release()


REBIND_SCRIPT = """
import numpy as np
from gradtest.reverse import gradient_reverse

def f(x):
    def rebind(kind, flag):  # Python code run inside the ufunc call: drops the array it reads
        x.value = np.full(x.shape, 100.0)
    old = np.seterrcall(rebind)
    try:
        with np.errstate(invalid="call"):
            y = np.sqrt(x)
    finally:
        np.seterrcall(old)
    return np.sum(y[1:])

print(gradient_reverse(f, np.array([-1.0, 4.0]))[0][1])
"""


SHRINK_SCRIPT = """
from gradtest import _reverse

tape = _reverse.Tape()
shape = []

class Shrinks:
    def __index__(self):  # Python code run while the shape is read: empties the list
        shape.clear()
        return 3

shape.extend([Shrinks(), Shrinks(), Shrinks()])
a = tape.leaf(0, (3,))
print(tape.linear(0, shape, [a], [1.0]) >= 0)
"""


@pytest.mark.parametrize("script, expected", [(REBIND_SCRIPT, "0.25"), (SHRINK_SCRIPT, "True")],
                         ids=["ufunc-rebinds-an-operand", "index-shrinks-the-shape"])
def test_glue_holds_what_python_code_can_drop(script, expected):
    # The glue must hold strong references across calls that run Python code (gt_glue.h). The C
    # fast path reads the operand arrays again after the ufunc call, where a NumPy error callback
    # rebinds the Tracked's value (dropping the array's last reference); reading a shape list
    # calls __index__, which empties the list. With borrowed references both read freed memory
    # (a crash under -X dev's debug allocator); in a child, so that a regression fails this test
    # instead of the run. The gradient is taken at the value the ufunc saw (4), not at 100.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == expected


def test_zero_d_float32_plus_a_float64_scalar():
    """The promotion casts a 0-d node on a tape that stores no dimension: under the CI's UBSan
    step this once passed memcpy a NULL source (gt_tape_cast)."""
    import gradtest

    report = gradtest.check_gradients(lambda x: x + np.float64(1.0), np.array(2.0, dtype=np.float32),
                                      backends=["reverse"])
    assert report.outcomes["reverse"].status == "pass"
