"""No silent zeros: every conversion that takes a value out of an AD engine either keeps tracking
or raises a clear error naming the call and what to do instead, in both engines; an unsupported
function is named by its real module."""

import math

import numpy as np
import pytest
import scipy.special

import gradtest

ENGINES = ["forward", "reverse"]

# (label, f, a fragment the message must contain)
CONVERSIONS = [
    ("float", lambda x: float(x[0]) * x, "float()"),
    ("int", lambda x: int(x[0]) * x, "int()"),
    ("complex", lambda x: complex(x[0]).real * x, "complex()"),
    ("item", lambda x: x[0].item() * x, ".item()"),
    ("sum_item", lambda x: np.sum(x).item() * x, ".item()"),
    ("tolist", lambda x: np.asarray(x.tolist()), ".tolist()"),
    ("math_sqrt", lambda x: math.sqrt(x[0]) * x, "math"),
    ("math_exp", lambda x: math.exp(np.sum(x)) * x, "math"),
    ("np_float64", lambda x: np.float64(x[0]) * x, "np.float64"),
    ("array_object", lambda x: np.array(x, dtype=object), "np.asarray"),
    ("assign_into_plain", lambda x: _assign(x), "assignment into"),
]


# conversions that keep tracking (gradtest._building): (label, f, gradient of sum(f) at x)
KEPT = [
    ("asarray", lambda x: np.asarray(x) * 2.0, lambda x: np.full(3, 2.0)),
    ("asarray_float", lambda x: np.asarray(x, dtype=float) * 2.0, lambda x: np.full(3, 2.0)),
    ("array_of_scalars", lambda x: np.array([x[0], x[1] ** 2]), lambda x: np.array([1.0, 2 * x[1], 0.0])),
    ("return_array_0d", lambda x: np.array(np.sum(x * x)), lambda x: 2 * x),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("label, f, expected", KEPT, ids=[c[0] for c in KEPT])
def test_array_building_keeps_tracking(engine, label, f, expected):
    x = np.array([1.5, 2.0, 3.0])
    (g,) = gradtest.gradient(lambda x: np.sum(f(x)), x, backend=engine)
    np.testing.assert_allclose(g, expected(x), rtol=1e-14)


def _assign(x):
    out = np.zeros(3)
    out[:] = x
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("label, f, fragment", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_conversion_raises_naming_the_call(engine, label, f, fragment):
    x = np.array([1.5, 2.0, 3.0])
    with pytest.raises(NotImplementedError) as info:
        gradtest.gradient(lambda x: np.sum(f(x)), x, backend=engine)
    message = str(info.value)
    assert fragment in message
    assert "drop its derivatives" in message
    # the message points at the user's line, and says what to do instead
    assert "test_no_silent_zeros.py" in message
    assert "x.value" in message or "np.stack" in message


@pytest.mark.parametrize("engine", ENGINES)
def test_check_gradients_reports_a_conversion_as_error_not_fail(engine):
    # the case: reverse used to report "expected 0.6, got 0", blaming the user's code
    x = np.array([0.3, 0.4])
    report = gradtest.check_gradients(lambda x: float(np.sum(x * x)), x, backends=[engine])
    outcome = report.outcomes[engine]
    assert outcome.status == "error"
    assert "float()" in outcome.message and "drop its derivatives" in outcome.message


@pytest.mark.parametrize("engine", ENGINES)
def test_allowed_non_differentiable_uses_still_work(engine):
    # comparisons, bool(), argmax and shapes are piecewise constant: not silent zeros
    def f(x):
        k = int(np.argmax(x.value if hasattr(x, "value") else x))
        scale = 2.0 if bool(np.sum(x) > 0) else 3.0
        return np.sum(x * x) * scale + x[k] * len(x)

    x = np.array([0.5, 2.0, 1.0])
    (g,) = gradtest.gradient(f, x, backend=engine)
    np.testing.assert_allclose(g, 4.0 * x + np.array([0.0, 3.0, 0.0]))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("call, name", [
    (lambda x: scipy.special.struve(1.0, x), "scipy.special.struve"),
    (lambda x: scipy.special.owens_t(x, 0.5), "scipy.special.owens_t"),
    (lambda x: np.fft.fftshift(x), "numpy.fft.fftshift"),
    (lambda x: np.fft.fft(x).real, "numpy.fft.fft"),
    (lambda x: np.frexp(x)[0], "numpy.frexp"),
    (lambda x: np.add.reduceat(x, [0, 1]), "numpy.add.reduceat"),
], ids=["struve", "owens_t", "fftshift", "fft", "frexp", "add_reduceat"])
def test_unsupported_functions_are_named_by_their_module(engine, call, name):
    x = np.array([0.5, 1.0, 2.0])
    with pytest.raises(NotImplementedError, match="does not support " + name.replace(".", r"\.")):
        gradtest.gradient(lambda x: np.sum(call(x)), x, backend=engine)
    report = gradtest.check_gradients(lambda x: np.sum(call(x)), x, backends=[engine])
    assert report.outcomes[engine].status == "error"
    assert name in report.outcomes[engine].message


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("call", [
    lambda x: np.abs(x * 1j),
    lambda x: np.abs(np.multiply(x, np.full(3, 1j))),
    lambda x: np.abs(np.exp(x.astype(complex))),
], ids=["scalar", "array", "astype"])
def test_complex_values_are_refused_as_out_of_scope(engine, call):
    x = np.array([0.5, 1.0, 2.0])
    with pytest.raises((TypeError, NotImplementedError), match="complex"):
        gradtest.gradient(lambda x: np.sum(call(x)), x, backend=engine)


@pytest.mark.parametrize("make", ["forward", "reverse"])
def test_complex_leaves_are_refused_as_out_of_scope(make):
    from gradtest.forward import Dual
    from gradtest.reverse import Tape, Tracked

    z = np.array([1.0 + 2.0j])
    with pytest.raises(TypeError, match="complex values are out of scope"):
        Dual(z, np.ones((1, 1))) if make == "forward" else Tracked.leaf(Tape(), z)


def test_public_name():
    from gradtest._arraylike import public_name

    assert public_name(np.sum) == "numpy.sum"
    assert public_name(np.linalg.inv) == "numpy.linalg.inv"
    assert public_name(np.fft.fftshift) == "numpy.fft.fftshift"
    assert public_name(scipy.special.iv) == "scipy.special.iv"
    assert public_name(np.add, "outer") == "numpy.add.outer"
    assert public_name(np.sin) == "numpy.sin"
