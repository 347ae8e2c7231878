"""gradtest.check_approx (issue 12, item 5): nested trees compared as LuxTestUtils' check_approx
does, with Julia's isapprox on each pair of leaves, atol/rtol and nans=; nans= of check_gradients."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import numpy as np
import pytest

import gradtest
from gradtest import check_approx

Pair = namedtuple("Pair", "a b")


@dataclasses.dataclass
class Params:
    w: np.ndarray
    b: float


def test_is_public_and_lazy():
    assert "check_approx" in gradtest.__all__
    assert gradtest.check_approx is check_approx


def tree(eps=0.0):
    return {"layers": [Params(np.array([1.0, 2.0]) + eps, 0.5), Params(np.ones((2, 2)), -1.0)],
            "pair": Pair(np.float32(3.0), (np.arange(3.0), None)), "n": 4}


def test_equal_and_nearly_equal_trees():
    assert check_approx(tree(), tree())
    assert check_approx(tree(), tree(1e-12))  # inside the default rtol, sqrt(eps)
    assert not check_approx(tree(), tree(1e-3))
    assert check_approx(tree(), tree(1e-3), atol=1e-2)
    assert check_approx(tree(), tree(1e-3), rtol=1e-2)


def test_isapprox_is_on_the_norm_of_each_leaf():
    # Julia's isapprox: norm(x - y) <= rtol * max(norm(x), norm(y)); one element off by 1e-3 of
    # its own size in a large array passes a relative tolerance of 1e-4 on the norm
    x = np.ones(10_000)
    y = x.copy()
    y[0] += 1e-3
    assert check_approx(x, y, rtol=1e-4)
    assert not check_approx(x, y, rtol=1e-6)
    assert check_approx(1.0, 1.0 + 1e-9, atol=1e-8) and not check_approx(1.0, 1.1, atol=1e-8)


def test_default_rtol_follows_the_dtype():
    a32 = np.float32(1.0)
    assert check_approx(a32, np.float32(1.0 + 1e-4))  # sqrt(eps(float32)) ~ 3.5e-4
    assert not check_approx(1.0, 1.0 + 1e-4)  # sqrt(eps(float64)) ~ 1.5e-8
    assert not check_approx(np.array([1, 2]), np.array([1, 3]))  # integers: exact


def test_nans():
    a = {"g": np.array([1.0, np.nan, 3.0])}
    assert not check_approx(a, {"g": np.array([1.0, np.nan, 3.0])})
    assert check_approx(a, {"g": np.array([1.0, np.nan, 3.0])}, nans=True)
    assert not check_approx(a, {"g": np.array([np.nan, 2.0, 3.0])}, nans=True)  # not the same place
    assert not check_approx(a, {"g": np.array([1.0, 2.0, 3.0])}, nans=True)


def test_infinities():
    assert check_approx(np.array([np.inf, 1.0]), np.array([np.inf, 1.0]))
    assert not check_approx(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]))
    assert not check_approx(np.array([np.inf, 1.0]), np.array([1.0, 1.0]))


def test_structure_must_match():
    assert not check_approx({"a": 1.0}, {"b": 1.0})
    assert not check_approx([1.0, 2.0], (1.0, 2.0))
    assert not check_approx([1.0], [1.0, 2.0])
    assert not check_approx(Pair(1.0, 2.0), (1.0, 2.0))
    assert not check_approx(np.ones(3), np.ones(4))
    assert not check_approx(Params(np.ones(1), 0.0), Pair(np.ones(1), 0.0))


def test_none_is_a_zero_tangent():
    assert check_approx(None, None)
    assert check_approx((None, np.ones(2)), (np.zeros(3), np.ones(2)))
    assert not check_approx((None,), (np.array([0.0, 1e-3]),))
    assert not check_approx(None, "x")


def test_bad_input_names_the_argument_and_the_place():
    with pytest.raises(TypeError, match=r"actual\['w'\]\[1\]: expected numbers"):
        check_approx({"w": [1.0, "two"]}, {"w": [1.0, 2.0]})
    with pytest.raises(TypeError, match="atol: expected a number"):
        check_approx(1.0, 1.0, atol="1e-3")
    with pytest.raises(TypeError, match="rtol: expected a number"):
        check_approx(1.0, 1.0, rtol=True)
    with pytest.raises(ValueError, match="atol: expected a finite number >= 0"):
        check_approx(1.0, 1.0, atol=-1.0)
    with pytest.raises(TypeError, match="nans: expected True or False"):
        check_approx(1.0, 1.0, nans="yes")


def test_callers_trees_are_not_modified():
    a, b = tree(), tree(1e-12)
    before = [a["layers"][0].w.copy(), b["layers"][0].w.copy()]
    check_approx(a, b, nans=True)
    np.testing.assert_array_equal(a["layers"][0].w, before[0])
    np.testing.assert_array_equal(b["layers"][0].w, before[1])


# ---- nans= of check_gradients / test_gradients -----------------------------------------------


def test_nans_option_of_check_gradients_is_validated():
    with pytest.raises(TypeError, match="nans: expected True or False"):
        gradtest.check_gradients(lambda x: np.sum(x), np.ones(2), nans="yes")
    report = gradtest.check_gradients(lambda x: np.sum(x**2), np.ones(2), nans=False)
    assert report.passed


def test_nans_reaches_the_comparison(temporary_backend):
    """nans=True accepts a NaN in the same element of the ground truth and a gradient; without
    it, or where only one side is NaN, the element fails (a NaN never passes silently)."""
    nan_at_1 = np.array([2.0, np.nan, 6.0])
    temporary_backend("nan_truth", lambda problem: [nan_at_1])
    f = lambda x: np.sum(x**2)  # noqa: E731
    x = np.array([1.0, 2.0, 3.0])
    common = dict(backends=["user"], ground_truth_backend="nan_truth")
    matched = gradtest.check_gradients(f, x, gradient=lambda x: (nan_at_1,), nans=True, **common)
    assert matched.passed, str(matched)
    strict = gradtest.check_gradients(f, x, gradient=lambda x: (nan_at_1,), **common)
    assert strict.outcomes["user"].status == "fail"
    one_sided = gradtest.check_gradients(f, x, gradient=lambda x: (2 * x,), nans=True, **common)
    assert one_sided.outcomes["user"].status == "fail"
