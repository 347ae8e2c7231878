"""Where gradtest follows its seed, LuxTestUtils (issue 12, items 4, 6, 7 and 8): an exception in f
is an error whatever the soft handling, ground_truth_dtype=None is the inputs' own dtype, a check
that checks nothing fails, and the dispatch checks' broken= gets the seed's hint."""

from __future__ import annotations

import numpy as np
import pytest

import gradtest
from gradtest._finite_diff import GroundTruthError


def _typo(x):
    return np.sum(x**2) + undefined_name  # noqa: F821  # the typo a soft handling must not hide


def _key_error(x):
    return np.sum(x) + {}["w"]


# ---- item 4: no ground truth is an error, never broken ----------------------------------------


@pytest.mark.parametrize("f", [_typo, _key_error], ids=["NameError", "KeyError"])
@pytest.mark.parametrize("soft", [
    {"soft_fail": True},
    {"soft_fail": ["forward", "reverse"]},
    {"broken_backends": ["forward", "reverse"]},
], ids=["soft_fail=True", "soft_fail=list", "all broken"])
def test_f_raising_is_an_error_under_soft_handling(f, soft):
    report = gradtest.check_gradients(f, np.ones(3), **soft)
    assert {o.status for o in report.outcomes.values()} == {"error"}
    assert not report.passed
    assert report.ground_truth_error is not None
    with pytest.raises(GroundTruthError, match="no ground truth") as info:
        gradtest.test_gradients(f, np.ones(3), **soft)
    assert not isinstance(info.value, AssertionError)  # a softfail marker must not catch it
    assert isinstance(info.value.__cause__.__cause__, (NameError, KeyError))


def test_soft_handling_still_softens_a_wrong_gradient():
    report = gradtest.check_gradients(lambda x: np.sum(x**2), np.ones(3), gradient=lambda x: 3 * x,
                                      soft_fail=True, backends=["user"])
    assert report.outcomes["user"].status == "broken" and report.ground_truth_error is None


def test_softfail_marker_reports_an_exception_in_f_as_an_error(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        """
        import numpy as np, pytest, gradtest

        @pytest.mark.softfail
        def test_typo():
            gradtest.test_gradients(lambda x: np.sum(x) + undefined_name, np.ones(3))

        @pytest.mark.softfail
        def test_wrong_gradient():
            gradtest.test_gradients(lambda x: np.sum(x ** 2), np.ones(3), gradient=lambda x: 3 * x,
                                    backends=["user"])
        """
    )
    result = pytester.runpytest("-p", "gradtest.pytest_plugin", "-rA")
    result.assert_outcomes(xfailed=1, errors=1)
    result.stdout.fnmatch_lines_random(["ERROR *::test_typo*", "E   *GroundTruthError: *NameError*",
                                        "XFAIL *::test_wrong_gradient*"])


# ---- item 6: ground_truth_dtype=None ------------------------------------------------------------


@pytest.mark.parametrize("dtype, expected", [(np.float32, np.float32), (np.float64, np.float64),
                                             (np.float16, np.float32)])
def test_ground_truth_dtype_none_is_the_inputs_own(dtype, expected):
    x = np.linspace(0.5, 1.5, 4).astype(dtype)
    report = gradtest.check_gradients(lambda x: np.sum(x**2), x, gradient=lambda x: 2 * x,
                                      ground_truth_dtype=None, backends=["user"])
    assert report.outcomes["user"].status == "pass"
    truth = report.ground_truth[0]
    assert truth.dtype == np.float64  # reported in float64 ...
    # ... but computed in the input's dtype: its rounding error shows
    reference = gradtest.check_gradients(lambda x: np.sum(x**2), x, gradient=lambda x: 2 * x,
                                         ground_truth_dtype=expected, backends=["user"])
    np.testing.assert_array_equal(truth, reference.ground_truth[0])


def test_ground_truth_dtype_none_differs_from_the_float64_default():
    x = np.linspace(0.5, 1.5, 4).astype(np.float32)
    f = lambda x: np.sum(np.sin(x) * x)  # noqa: E731
    a = gradtest.check_gradients(f, x, ground_truth_dtype=None, backends=["reverse"]).ground_truth[0]
    b = gradtest.check_gradients(f, x, backends=["reverse"]).ground_truth[0]
    assert not np.array_equal(a, b)  # float32 finite differences are not float64 ones
    np.testing.assert_allclose(a, b, rtol=1e-2)


def test_ground_truth_dtype_none_with_mixed_inputs_promotes():
    x32, x64 = np.ones(3, np.float32), np.ones(2)
    f = lambda a, b: np.sum(a**2) + np.sum(b**3)  # noqa: E731
    r_none = gradtest.check_gradients(f, x32, x64, ground_truth_dtype=None, backends=["reverse"])
    r_64 = gradtest.check_gradients(f, x32, x64, ground_truth_dtype=np.float64, backends=["reverse"])
    for a, b in zip(r_none.ground_truth, r_64.ground_truth):
        np.testing.assert_array_equal(a, b)


# ---- item 7: nothing checked is a failure --------------------------------------------------------


def test_empty_backends_fails_test_gradients():
    with pytest.warns(gradtest.NoBackendWarning), pytest.raises(AssertionError, match="nothing was checked"):
        gradtest.test_gradients(lambda x: np.sum(x), np.ones(2), backends=[])


def test_everything_skipped_fails_test_gradients():
    with pytest.warns(gradtest.NoBackendWarning), pytest.raises(AssertionError, match="nothing was checked"):
        gradtest.test_gradients(lambda x: np.sum(x), np.ones(2), skip_backends=["forward", "reverse"])
    with pytest.warns(gradtest.NoBackendWarning):
        assert not gradtest.check_gradients(lambda x: np.sum(x), np.ones(2), backends=[]).passed


def test_one_backend_left_is_enough():
    gradtest.test_gradients(lambda x: np.sum(x**2), np.ones(2), skip_backends=["forward"])


# ---- item 8: dispatch checks take call_broken / opt_broken ----------------------------------


@pytest.mark.parametrize("check", [gradtest.check_dispatch, gradtest.test_dispatch])
def test_dispatch_broken_gets_the_seeds_hint(check):
    with pytest.raises(TypeError, match="use call_broken or opt_broken"):
        check(lambda x: np.sum(x), np.ones(2), broken=True)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'brokn'"):
        check(lambda x: np.sum(x), np.ones(2), brokn=True)
