"""np.histogram, np.histogram_bin_edges, np.bincount, np.add.at and np.unique in both engines.

These were silent zeros: the functions ran on the primal values as if piecewise constant, and
a check then blamed correct user code. The expected gradients below are written by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradtest

ENGINES = ("forward", "reverse")


def grad(engine, f, *args):
    return gradtest.gradient(f, *args, backend=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_histogram_weights(engine):
    x = np.array([0.1, 0.5, 0.55, 0.9, 2.0])  # bins [0, 1), [1, 2]: two bins over range (0, 2)
    c = np.array([1.0, 10.0])

    def f(w):
        h, _ = np.histogram(x, bins=2, range=(0.0, 2.0), weights=w)
        return np.sum(h * c)

    (g,) = grad(engine, f, np.ones(5))
    np.testing.assert_array_equal(g, [1.0, 1.0, 1.0, 1.0, 10.0])  # 2.0 is in the closed last bin


@pytest.mark.parametrize("engine", ENGINES)
def test_histogram_edges_follow_min_and_max(engine):
    # edges = linspace(min, max, 4): sum(edges) = 2 (min + max), all from the two extremes
    x = np.array([0.3, -1.0, 2.5, 0.7])
    (g,) = grad(engine, lambda x: np.sum(np.histogram(x, bins=3)[1]), x)
    np.testing.assert_allclose(g, [0.0, 2.0, 2.0, 0.0], rtol=1e-14)
    (g,) = grad(engine, lambda x: np.sum(np.histogram_bin_edges(x, bins=3)), x)
    np.testing.assert_allclose(g, [0.0, 2.0, 2.0, 0.0], rtol=1e-14)
    # a given range makes them constants
    (g,) = grad(engine, lambda x: np.sum(np.histogram(x, bins=3, range=(-2, 3))[1] * x), x)
    np.testing.assert_allclose(g, np.linspace(-2, 3, 4))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", ["density", "weights_density", "auto_bins", "float32_weights"])
def test_histogram_checks_pass(engine, case):
    rng = np.random.default_rng(5)
    x = rng.normal(size=40)
    w = rng.uniform(0.5, 1.5, 40)
    f, args = {
        "density": (lambda x: np.sum(np.histogram(x, bins=5, density=True)[0] ** 2), (x,)),
        "weights_density": (lambda x, w: np.sum(np.histogram(x, bins=4, weights=w, density=True)[0] ** 2), (x, w)),
        "auto_bins": (lambda x: np.sum(np.histogram(x, bins="auto")[1] ** 2), (x,)),
        "float32_weights": (lambda w: np.sum(np.histogram(x, bins=4, weights=w)[0] ** 2), (w.astype(np.float32),)),
    }[case]
    report = gradtest.check_gradients(f, *args, backends=[engine])
    assert report.passed, report


@pytest.mark.parametrize("engine", ENGINES)
def test_histogram_values_are_numpys(engine):
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=30), rng.uniform(size=30)
    seen = {}

    def f(x, w):
        h, e = np.histogram(x, bins=6, weights=w, density=True)
        seen["h"], seen["e"] = getattr(h, "value", h), getattr(e, "value", e)
        return np.sum(h) + np.sum(e)

    grad(engine, f, x, w)
    h, e = np.histogram(x, bins=6, weights=w, density=True)
    np.testing.assert_array_equal(seen["h"], h)
    np.testing.assert_array_equal(seen["e"], e)


@pytest.mark.parametrize("engine", ENGINES)
def test_bincount_weights_with_a_long_segment(engine):
    # one segment of 5000 elements takes 13 scan steps; every weight's derivative is its bin's c
    n = 5003
    bins = np.where(np.arange(n) < 5000, 2, np.arange(n) % 2)
    c = np.array([1.0, -2.0, 3.0, 0.5])
    (g,) = grad(engine, lambda w: np.sum(np.bincount(bins, weights=w, minlength=4) * c), np.ones(n))
    np.testing.assert_array_equal(g, c[bins])


@pytest.mark.parametrize("engine", ENGINES)
def test_add_at_accumulates_repeated_indices(engine):
    def f(v):
        z = np.zeros_like(v[:3])
        np.add.at(z, [0, 0, 2, 2, 2], v)
        return np.sum(z * np.array([1.0, 5.0, 7.0]))

    (g,) = grad(engine, f, np.arange(1.0, 6.0))
    np.testing.assert_array_equal(g, [1.0, 1.0, 7.0, 7.0, 7.0])


@pytest.mark.parametrize("engine", ENGINES)
def test_add_at_into_a_plain_array_is_refused(engine):
    def f(v):
        z = np.zeros(3)
        np.add.at(z, [0, 1], v[:2])
        return np.sum(z)

    with pytest.raises(NotImplementedError, match="numpy.add.at into a plain array"):
        grad(engine, f, np.ones(3))


@pytest.mark.parametrize("engine", ENGINES)
def test_unique_values_carry_their_first_occurrence(engine):
    x = np.array([2.0, -1.0, 2.0, 0.5])
    # unique -> [-1, 0.5, 2]; the 2 comes from x[0]
    (g,) = grad(engine, lambda x: np.sum(np.unique(x) * np.array([1.0, 10.0, 100.0])), x)
    np.testing.assert_array_equal(g, [100.0, 1.0, 0.0, 10.0])
    u, idx, inv, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True)
    seen = {}

    def g2(x):
        out = np.unique(x, return_index=True, return_inverse=True, return_counts=True)
        seen["out"] = out
        return np.sum(out[0])

    grad(engine, g2, x)
    np.testing.assert_array_equal(seen["out"][1], idx)
    np.testing.assert_array_equal(seen["out"][2], inv)
    np.testing.assert_array_equal(seen["out"][3], counts)


@pytest.mark.parametrize("engine", ENGINES)
def test_unique_rows(engine):
    x = np.array([[1.0, 2.0], [0.0, 5.0], [1.0, 3.0]])  # distinct rows, sorted into another order
    report = gradtest.check_gradients(lambda x: np.sum(np.unique(x, axis=0) ** 2 * np.arange(6.0).reshape(3, 2)), x,
                                      backends=[engine])
    assert report.passed, report
