"""ndarray subclasses gradtest cannot honour are refused (issue 12, item 12): a masked array's
mask, or np.matrix's algebra, would be dropped by the ground truth and kept by the backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradtest


def _matrix(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(a)


def test_masked_array_is_refused_naming_the_argument():
    x = np.ma.masked_array(np.ones(3), mask=[False, True, False])
    with pytest.raises(TypeError, match=r"args\[0\]: gradtest differentiates plain numpy.ndarray, "
                                        r"got numpy.ma.MaskedArray.*x.filled"):
        gradtest.check_gradients(lambda x: np.sum(x**2), x)
    nested = {"w": np.ones(2), "m": x}
    with pytest.raises(TypeError, match=r"args\[1\]\['m'\]: .*MaskedArray"):
        gradtest.test_gradients(lambda a, p: np.sum(p["w"]) + np.sum(p["m"]), 1.0, nested)
    with pytest.raises(TypeError, match=r"args\[0\]: .*MaskedArray"):
        gradtest.gradient(lambda x: np.sum(x**2), x)


def test_other_subclasses_are_refused():
    class Tagged(np.ndarray):
        pass

    with pytest.raises(TypeError, match=r"args\[0\]: .*matrix"):
        gradtest.check_gradients(lambda m: float(np.sum(m * m)), _matrix(np.ones((2, 2))))
    with pytest.raises(TypeError, match=r"args\[0\]: .*Tagged.*np.asarray"):
        gradtest.check_gradients(lambda x: np.sum(x**2), np.ones(3).view(Tagged))


def test_constant_subclasses_and_memmap_are_fine(tmp_path):
    m = np.ma.masked_array(np.ones(3), mask=[False, True, False])
    report = gradtest.check_gradients(lambda x, m: np.sum(x**2) + float(m.sum()), np.ones(2), gradtest.Constant(m))
    assert report.passed
    ints = np.ma.masked_array(np.arange(3), mask=[0, 1, 0])  # not differentiated: passed unchanged
    assert gradtest.check_gradients(lambda x, k: np.sum(x**2) * k.sum(), np.ones(2), ints).passed
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=(3,))
    mm[:] = [1.0, 2.0, 3.0]
    assert gradtest.check_gradients(lambda x: np.sum(x**2), mm, gradient=lambda x: 2 * np.asarray(x)).passed


def test_python_dispatch_check_refuses_them_too():
    x = np.ma.masked_array(np.ones(3), mask=[False, True, False])
    with pytest.raises(TypeError, match=r"args\[0\]: .*MaskedArray"):
        gradtest.check_dispatch(lambda x: np.sum(x**2), x)
