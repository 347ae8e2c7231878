"""Arrays built from AD values inside f (np.array of a list, np.asarray, np.r_, np.c_): both engines
keep tracking, the gradient is right, and NumPy's own functions are back once the engine is done."""

import numpy as np
import pytest

import gradtest
from gradtest import reverse

ENGINES = ["forward", "reverse"]
X = np.array([0.5, 1.5, 2.0])


CASES = {
    # name: (f, its gradient at X written by hand)
    "list_of_scalars": (lambda x: np.sum(np.array([x[0] ** 2, 2 * x[1], 3.0]) ** 2),
                        lambda x: np.array([4 * x[0] ** 3, 8 * x[1], 0.0])),
    "nested_lists": (lambda x: np.sum(np.array([[x[0], x[1]], [x[2], 1.0]]) @ np.array([1.0, 2.0])),
                     lambda x: np.array([1.0, 2.0, 1.0])),
    "tuple_of_arrays": (lambda x: np.sum(np.array((x, x ** 2)) * np.array([[1.0], [3.0]])),
                        lambda x: 1.0 + 6.0 * x),
    "asarray_of_engine_array": (lambda x: np.sum(np.asarray(x) * np.asanyarray(x)),
                                lambda x: 2.0 * x),
    "float_dtype": (lambda x: np.sum(np.array([x[0], x[1]], dtype=np.float64) ** 3),
                    lambda x: np.array([3 * x[0] ** 2, 3 * x[1] ** 2, 0.0])),
    "ndmin": (lambda x: np.sum(np.array(x, ndmin=3) @ np.ones((3, 1))),
              lambda x: np.ones(3)),
    "r_": (lambda x: np.sum(np.r_[x, x[:2] ** 2, 5.0] ** 2),
           lambda x: 2 * x + np.r_[4 * x[:2] ** 3, 0.0]),
    "c_": (lambda x: np.sum(np.c_[x, x ** 2] ** 2), lambda x: 2 * x + 4 * x ** 3),
    "returned_0d": (lambda x: np.array(np.sum(x ** 2)), lambda x: 2 * x),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_through_built_arrays(name, engine):
    f, expected = CASES[name]
    (g,) = gradtest.gradient(f, X.copy(), backend=engine)
    np.testing.assert_allclose(g, expected(X), rtol=1e-13)


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_gradients_passes_on_built_arrays(name):
    f, _ = CASES[name]
    report = gradtest.check_gradients(f, X.copy(), backends=ENGINES)
    assert report.passed, report


def test_a_wrong_gradient_through_np_array_is_caught():
    def f(x):
        return np.sum(np.array([x[0] ** 2, x[1]]))

    wrong = lambda x: (np.array([2 * x[0], 2.0, 0.0]),)  # noqa: E731 - d/dx1 is 1, not 2
    report = gradtest.check_gradients(f, X.copy(), gradient=wrong, backends=["user"])
    assert not report.passed


@pytest.mark.parametrize("engine", ENGINES)
def test_dtypes_that_drop_the_derivative_are_still_refused(engine):
    def f(x):
        return np.sum(np.array([x[0], x[1]], dtype=object).astype(float))

    with pytest.raises(NotImplementedError, match="drop its derivatives"):
        gradtest.gradient(f, X.copy(), backend=engine)


def test_numpy_is_restored_after_the_engine_ran_even_when_f_raises():
    before = (np.array, np.asarray, np.asanyarray)

    def f(x):
        assert np.array is not before[0]  # replaced while the engine runs f
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        reverse.vjp(f, (X.copy(),), None)
    assert (np.array, np.asarray, np.asanyarray) == before
    import numpy.lib._index_tricks_impl as tricks

    assert tricks.array is before[0]


def test_plain_calls_inside_f_are_numpy_s_own():
    seen = {}

    def f(x):
        plain = np.array([1, 2, 3])
        seen["dtype"] = plain.dtype
        seen["copy"] = np.array(seen.setdefault("src", np.ones(2)), copy=True) is not seen["src"]
        return np.sum(x * plain)

    (g,) = gradtest.gradient(f, X.copy(), backend="reverse")
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])
    assert seen["dtype"] == np.array([1, 2, 3]).dtype and seen["copy"]


def test_callers_arrays_are_not_changed():
    x = X.copy()
    gradtest.gradient(CASES["r_"][0], x, backend="reverse")
    np.testing.assert_array_equal(x, X)
