"""The public checking API on the finite-difference ground truth and the "user" backend."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

import gradtest
from gradtest import Constant, check_gradients, test_gradients


def seed_f(x, y, z):
    return x + np.sum(y["t"] ** 2) + np.sum(y["x"]["z"])


def seed_grad(x, y, z):
    return None, {"t": 2 * y["t"], "x": {"z": np.ones_like(y["x"]["z"])}}, None


def seed_args(rng, t=None):
    return 1.0, {"t": rng.random(10) if t is None else t, "x": {"z": np.array([2.0])}}, None


def test_seed_example_passes(rng):
    report = test_gradients(seed_f, *seed_args(rng), gradient=seed_grad)
    assert report.passed
    assert report.outcomes["user"].status == "pass"
    gt = report.ground_truth
    assert gt[0] is None and gt[2] is None
    np.testing.assert_allclose(gt[1]["x"]["z"], [1.0], rtol=1e-9)


def test_seed_example_with_transposed_and_strided_inputs(rng):
    def f(x, y):
        return np.sum(x["a"] ** 2 * np.arange(x["a"].size).reshape(x["a"].shape)) + np.sum(np.sin(y))

    def g(x, y):
        return {"a": 2 * x["a"] * np.arange(x["a"].size).reshape(x["a"].shape)}, np.cos(y)

    a = rng.standard_normal((3, 4)).T  # F-ordered view
    y = rng.standard_normal(12)[::2]  # strided view
    assert test_gradients(f, {"a": a}, y, gradient=g).passed
    a_f = np.asfortranarray(rng.standard_normal((2, 5)))
    assert test_gradients(f, {"a": a_f}, y, gradient=g).passed


@pytest.mark.parametrize(
    "name, wrong_t, index",
    [
        ("sign error", lambda t: -2 * t, None),
        ("missing factor 2", lambda t: t, None),
        ("one element", lambda t: np.where(np.arange(t.size) == 7, 3 * t, 2 * t), 7),
        ("relative 1e-5", lambda t: np.where(np.arange(t.size) == 4, 2 * t * (1 + 1e-5), 2 * t), 4),
    ],
)
def test_wrong_gradients_fail_and_name_the_worst_element(rng, name, wrong_t, index):
    args = seed_args(rng, t=rng.uniform(0.5, 1.5, 10))

    def grad(x, y, z):
        return None, {"t": wrong_t(y["t"]), "x": {"z": np.ones(1)}}, None

    report = check_gradients(seed_f, *args, gradient=grad)
    outcome = report.outcomes["user"]
    assert outcome.status == "fail", name
    assert outcome.worst.path == "args[1]['t']"
    if index is not None:
        assert outcome.worst.index == (index,)
        assert outcome.worst.name == f"args[1]['t'][{index}]"
        assert f"args[1]['t'][{index}]" in str(report)
    with pytest.raises(AssertionError, match="gradient check failed"):
        test_gradients(seed_f, *args, gradient=grad)


def test_single_element_error_in_large_gradient_is_caught_by_default(rng):
    x = rng.uniform(0.5, 2.0, 20_000)

    def grad(x):
        g = 2 * x
        g[12_345] *= 1 + 1e-3
        return (g,)

    # whichever mode auto chooses on this machine, the wrong element is named
    for mode in ("auto", "full", "directional"):
        report = check_gradients(lambda x: np.sum(x * x), x, gradient=grad, mode=mode)
        assert report.outcomes["user"].status == "fail", mode
        assert report.outcomes["user"].worst.index == (12_345,), mode


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e-6, 1.0, 1e6])
def test_no_false_alarm_across_dtypes_and_magnitudes(rng, dtype, magnitude):
    if dtype == np.float16 and magnitude != 1.0:
        pytest.skip("float16 cannot hold 1e6, nor 1e-6 to useful precision")
    x = (rng.uniform(0.5, 2.0, 16) * magnitude).astype(dtype)

    def f(x):
        return np.sum(np.log(x) * x) + np.sum(x**2) / magnitude

    def g(x):
        return ((np.log(x) + 1 + 2 * x / magnitude).astype(x.dtype),)

    report = check_gradients(f, x, gradient=g)
    assert report.passed, str(report)


def test_large_values_and_products_do_not_false_alarm(rng):
    w = rng.standard_normal((20, 30)) * 1e3
    v = rng.standard_normal(30)
    f = lambda w, v: np.sum(np.tanh(w @ v / 1e3) ** 2) * 1e8
    def g(w, v):
        h = np.tanh(w @ v / 1e3)
        d = 2 * h * (1 - h**2) * 1e8 / 1e3
        return np.outer(d, v), w.T @ d
    assert check_gradients(f, w, v, gradient=g).passed


def test_zero_d_namedtuple_dataclass_and_constants(rng):
    Pair = collections.namedtuple("Pair", "a b")

    @dataclasses.dataclass
    class Params:
        w: np.ndarray
        scale: float

    def f(p, pair, const, ints):
        return p.scale * np.sum(p.w**3) + pair.a * 2 + np.sum(const) + np.sum(ints) + float(pair.b)

    def g(p, pair, const, ints):
        return Params(3 * p.scale * p.w**2, None), Pair(np.array(2.0), None), None, None

    args = (Params(rng.standard_normal(3), 2.0), Pair(np.array(1.5), 3), Constant(np.ones(3)), np.arange(3))
    report = test_gradients(f, *args, gradient=g)
    gt = report.ground_truth
    assert gt[2] is None and gt[3] is None and gt[1].b is None
    assert gt[1].a.shape == ()
    assert isinstance(gt[0], Params) and gt[0].scale is None


def test_array_output_is_checked_through_a_cotangent(rng, temporary_backend):
    x = rng.standard_normal(5)

    def jtu(problem):
        (u,) = problem.output.cotangents
        return [2 * problem.diff_leaves[0] * u]

    temporary_backend("vjp_right", jtu)
    temporary_backend("vjp_wrong", lambda p: [2 * p.diff_leaves[0]])
    report = check_gradients(lambda x: x**2, x, backends=["vjp_right", "vjp_wrong"])
    assert report.outcomes["vjp_right"].status == "pass"
    assert report.outcomes["vjp_wrong"].status == "fail"


def test_tree_output(rng, temporary_backend):
    x = rng.standard_normal(4)

    def jtu(problem):
        u1, u2 = problem.output.cotangents
        x = problem.diff_leaves[0]
        return [u1 * np.cos(x) + 3 * u2]

    temporary_backend("tree_vjp", jtu)
    report = check_gradients(lambda x: (np.sin(x), {"s": 3 * np.sum(x)}), x, backends=["tree_vjp"])
    assert report.outcomes["tree_vjp"].status == "pass", str(report)


def test_user_gradient_on_array_output_is_an_error_that_explains(rng):
    report = check_gradients(lambda x: x**2, rng.standard_normal(3), gradient=lambda x: (2 * x,))
    assert report.outcomes["user"].status == "error"
    assert "Jacobian" in report.outcomes["user"].message


class TestSemantics:
    @pytest.fixture(autouse=True)
    def backends(self, temporary_backend):
        temporary_backend("good", lambda p: [2 * p.diff_leaves[0]])
        temporary_backend("bad", lambda p: [-2 * p.diff_leaves[0]])

        def boom(p):
            raise RuntimeError("backend exploded")

        temporary_backend("boom", boom)

    def check(self, **kw):
        return check_gradients(lambda x: np.sum(x**2), np.array([1.0, 2.0]), backends=["good", "bad", "boom"], **kw)

    def test_plain(self):
        report = self.check()
        assert {k: o.status for k, o in report.outcomes.items()} == {"good": "pass", "bad": "fail", "boom": "error"}
        assert "backend exploded" in report.outcomes["boom"].message
        assert isinstance(report.outcomes["boom"].exception, RuntimeError)
        assert not report.passed

    def test_skip(self):
        report = self.check(skip_backends=["bad", "boom"])
        assert [o.status for o in report.outcomes.values()] == ["pass", "skipped", "skipped"]
        assert report.passed

    def test_broken(self):
        report = self.check(broken_backends=["bad", "boom"])
        assert [o.status for o in report.outcomes.values()] == ["pass", "broken", "broken"]
        assert report.passed

    def test_broken_but_passing_is_unexpected(self):
        report = self.check(broken_backends=["good", "bad", "boom"])
        assert report.outcomes["good"].status == "unexpected_pass"
        assert "remove it from broken_backends" in report.outcomes["good"].message
        assert not report.passed
        with pytest.raises(AssertionError, match="unexpectedly passed"):
            test_gradients(lambda x: np.sum(x**2), np.array([1.0]), backends=["good"], broken_backends=["good"])

    def test_soft_fail_all(self):
        report = self.check(soft_fail=True)
        assert [o.status for o in report.outcomes.values()] == ["pass", "broken", "broken"]

    def test_soft_fail_list_overrides_broken(self):
        report = self.check(soft_fail=["good", "bad"], broken_backends=["good"])
        assert [o.status for o in report.outcomes.values()] == ["pass", "broken", "error"]

    @pytest.mark.parametrize("kw", [{"skip_backends": ["nope"]}, {"broken_backends": ["nope"]},
                                    {"soft_fail": ["nope"]}, {"backends": ["nope"]}])
    def test_unknown_names(self, kw):
        with pytest.raises(ValueError, match="unknown backend 'nope'"):
            check_gradients(lambda x: np.sum(x), np.ones(2), **kw)

    def test_a_misspelt_name_gets_the_closest_known_one(self):
        with pytest.raises(ValueError, match=r"skip_backends: unknown backend 'forwrd' \(did you mean 'forward'\?\); "
                                             r"known backends: finite_diff, user, forward, reverse"):
            check_gradients(lambda x: np.sum(x), np.ones(2), skip_backends=["forwrd"])
        with pytest.raises(ValueError, match=r"unknown backend 'zzz'; known"):
            gradtest.get_backend("zzz")

    def test_skip_and_broken_together(self):
        with pytest.raises(ValueError, match="both name 'bad'"):
            self.check(skip_backends=["bad"], broken_backends=["bad"])

    def test_nothing_left_warns(self):
        with pytest.warns(gradtest.NoBackendWarning, match="no backend left"):
            self.check(skip_backends=["good", "bad", "boom"])
        with pytest.warns(gradtest.NoBackendWarning):
            check_gradients(lambda x: np.sum(x), np.ones(2), skip_backends=["forward", "reverse"])


class TestBadInput:
    def test_f_raising_is_an_error_outcome(self):
        def f(x):
            raise ZeroDivisionError("inside f")

        report = check_gradients(f, np.ones(2), gradient=lambda x: (x,))
        assert report.outcomes["user"].status == "error"
        assert "inside f" in report.outcomes["user"].message
        assert not report.passed

    def test_non_finite_ground_truth_is_never_passed(self):
        report = check_gradients(lambda x: np.sum(np.sqrt(x)), np.array([1.0, 0.0, 4.0]),
                                 gradient=lambda x: (0.5 / np.sqrt(np.abs(x) + 1),))
        outcome = report.outcomes["user"]
        assert outcome.status == "error"
        assert "not finite" in outcome.message and "args[0][" in outcome.message

    def test_non_numeric_output(self):
        report = check_gradients(lambda x: "text", np.ones(2), gradient=lambda x: (x,))
        assert report.outcomes["user"].status == "error"
        report = check_gradients(lambda x: np.sum(x) * 1j, np.ones(2), gradient=lambda x: (x,))
        assert report.outcomes["user"].status == "error"

    def test_no_differentiable_leaf(self):
        with pytest.raises(ValueError, match=r"args: no differentiable argument.*args\[0\]: int"):
            check_gradients(lambda x, y: x, 1, np.arange(3))

    def test_not_callable(self):
        with pytest.raises(TypeError, match="f: expected a callable"):
            check_gradients(3, np.ones(2))
        with pytest.raises(TypeError, match="gradient: expected a callable"):
            check_gradients(np.sum, np.ones(2), gradient=np.ones(2))

    def test_gradient_with_wrong_tree(self):
        report = check_gradients(seed_f, *seed_args(np.random.default_rng(0)), gradient=lambda x, y, z: (None, None))
        assert report.outcomes["user"].status == "error"
        assert "returned a tuple of 2; expected a tuple of 3 gradients, one per argument" in report.outcomes["user"].message

    def test_gradient_with_wrong_shape(self):
        report = check_gradients(lambda x: np.sum(x**2), np.ones(4), gradient=lambda x: (np.ones(3),))
        outcome = report.outcomes["user"]
        assert outcome.status == "error"
        assert "args[0]" in outcome.message and "(3,)" in outcome.message and "(4,)" in outcome.message

    def test_gradient_missing_for_a_differentiated_leaf(self):
        report = check_gradients(lambda x: np.sum(x**2), np.ones(4), gradient=lambda x: (None,))
        assert "args[0] is None" in report.outcomes["user"].message

    @pytest.mark.parametrize("kw, match", [({"method": "sideways"}, "method"), ({"mode": "fast"}, "mode"),
                                           ({"bogus": 1}, "bogus"), ({"atol": -1}, "atol"),
                                           ({"time_budget": 0}, "time_budget")])
    def test_bad_options(self, kw, match):
        with pytest.raises((TypeError, ValueError), match=match):
            check_gradients(lambda x: np.sum(x), np.ones(2), gradient=lambda x: (np.ones(2),), **kw)


class TestCallerArraysUntouched:
    def test_after_passing_and_failing_checks(self, rng):
        args = seed_args(rng)
        before = args[1]["t"].copy()
        check_gradients(seed_f, *args, gradient=seed_grad)
        check_gradients(seed_f, *args, gradient=lambda x, y, z: (None, {"t": y["t"], "x": {"z": np.ones(1)}}, None))
        np.testing.assert_array_equal(args[1]["t"], before)

    def test_f_mutating_its_inputs_is_reported(self, rng):
        x = rng.standard_normal(4)
        c = np.ones(2)
        before, c_before = x.copy(), c.copy()

        def f(x, c):
            out = np.sum(x**2)
            x += 1.0
            c *= 2
            return out

        report = check_gradients(f, x, c, gradient=lambda x, c: (2 * x, None))
        np.testing.assert_array_equal(x, before)
        np.testing.assert_array_equal(c, c_before)
        # a ground truth of an f that changes its inputs means nothing: an error, not a fail
        assert report.outcomes["user"].status == "error"
        assert any("mutated its inputs" in n and "args[0]" in n and "args[1]" in n for n in report.notes)

    def test_f_raising_half_way(self, rng):
        x = rng.standard_normal(6)
        before = x.copy()
        calls = []

        def f(x):
            calls.append(1)
            x[0] = 99.0
            if len(calls) > 5:
                raise RuntimeError("half way")
            return np.sum(x)

        report = check_gradients(f, x, gradient=lambda x: (np.ones(6),))
        assert report.outcomes["user"].status == "error"
        np.testing.assert_array_equal(x, before)

    def test_gradient_function_gets_copies(self, rng):
        x = rng.standard_normal(3)
        before = x.copy()

        def g(x):
            x *= 0
            return (np.ones(3),)

        check_gradients(np.sum, x, gradient=g)
        np.testing.assert_array_equal(x, before)


class TestModes:
    def test_directional_explicit(self, rng):
        x = rng.standard_normal(50)
        ok = check_gradients(lambda x: np.sum(np.sin(x)), x, gradient=lambda x: (np.cos(x),), mode="directional")
        assert ok.mode == "directional" and ok.passed
        bad = check_gradients(lambda x: np.sum(np.sin(x)), x, gradient=lambda x: (np.cos(x) * 1.01,),
                              mode="directional", n_directions=4)
        assert bad.outcomes["user"].status == "fail"
        # every element is wrong: whichever one the localisation names is confirmed wrong
        worst = bad.outcomes["user"].worst
        assert worst.path == "args[0]" and worst.got == pytest.approx(1.01 * np.cos(x[worst.index]))

    def test_auto_switches_on_time_budget_and_says_so(self, rng):
        x = rng.standard_normal(2000)
        report = check_gradients(lambda x: np.sum(x**2), x, gradient=lambda x: (2 * x,), time_budget=1e-4)
        assert report.mode == "directional"
        assert any("time_budget" in n for n in report.notes)
        assert "directional mode" in str(report)

    def test_auto_plans_directional_from_the_cost_of_f(self, rng):
        import time

        def slow(x):
            time.sleep(0.002)
            return np.sum(x**2)

        x = rng.standard_normal(60)  # ~60 * 16 calls of 2 ms: over half the budget
        report = check_gradients(slow, x, gradient=lambda x: (2 * x,), time_budget=1.0, n_directions=4)
        assert report.mode == "directional", str(report)
        assert any("would take about" in n for n in report.notes)
        assert report.passed

    def test_auto_gives_way_when_the_full_run_reaches_the_budget(self, rng):
        import time

        calls = []

        def slower_later(x):  # cheap while the plan is made, slow afterwards
            calls.append(1)
            if len(calls) > 40:
                time.sleep(0.002)
            return np.sum(x**2)

        x = rng.standard_normal(60)
        report = check_gradients(slower_later, x, gradient=lambda x: (2 * x,), time_budget=0.2, n_directions=4)
        assert report.mode == "directional", str(report)
        assert any("reached time_budget" in n for n in report.notes)
        assert report.passed

    @pytest.mark.parametrize("method", ["central", "forward", "backward"])
    @pytest.mark.parametrize("richardson", [True, False])
    def test_methods(self, rng, method, richardson):
        x = rng.uniform(0.5, 1.5, 8)
        good = check_gradients(lambda x: np.sum(np.exp(x)), x, gradient=lambda x: (np.exp(x),),
                               method=method, richardson=richardson)
        assert good.passed, str(good)
        bad = check_gradients(lambda x: np.sum(np.exp(x)), x, gradient=lambda x: (np.exp(x) * (1 + 1e-3),),
                              method=method, richardson=richardson)
        assert not bad.passed

    def test_ground_truth_dtype_float32(self, rng):
        x = rng.uniform(0.5, 1.5, 8)
        report = check_gradients(lambda x: np.sum(x**3), x, gradient=lambda x: (3 * x**2,),
                                 ground_truth_dtype=np.float32, rtol=1e-3)
        assert report.passed, str(report)

    def test_explicit_tolerances(self):
        x = np.array([1.0, 2.0])
        g = lambda x: (2 * x * 1.001,)
        assert not check_gradients(lambda x: np.sum(x**2), x, gradient=g).passed
        assert check_gradients(lambda x: np.sum(x**2), x, gradient=g, rtol=1e-2).passed
        assert check_gradients(lambda x: np.sum(x**2), x, gradient=g, rtol=0, atol=1e-2).passed


def test_gradient_function(rng):
    x = rng.standard_normal(3)
    (g,) = gradtest.gradient(lambda x: np.sum(x**2), x)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-8)
    with pytest.raises(ValueError, match="scalar-valued"):
        gradtest.gradient(lambda x: x**2, x)
    with pytest.raises(ValueError, match="unknown backend"):
        gradtest.gradient(np.sum, x, backend="nope")


def test_kwargs_are_passed_and_not_differentiated(rng):
    x = rng.standard_normal(3)
    report = test_gradients(lambda x, scale: np.sum(scale * x**2), x, kwargs={"scale": np.full(3, 3.0)},
                            gradient=lambda x, scale: (6 * x,))
    assert report.passed


def test_report_rendering(rng):
    report = check_gradients(seed_f, *seed_args(rng), gradient=seed_grad)
    text = str(report)
    assert "seed_f" in text and "user" in text and "PASSED" in text and "central adaptive" in text
    html = report._repr_html_()
    assert "<table>" in html and "pass" in html
    assert "user=pass" in repr(report)


def test_test_gradients_is_not_collected():
    assert test_gradients.__test__ is False


def test_backend_options_reach_their_backend(temporary_backend):
    seen = {}

    def compute(problem):
        seen.update(problem.options)
        return [2 * problem.diff_leaves[0]]

    temporary_backend("probe", compute)
    report = check_gradients(lambda x: np.sum(x**2), np.ones(3), backends=["probe"], probe_alpha=3)
    assert report.passed and seen == {"probe_alpha": 3}
    with pytest.raises(TypeError, match="unprobe_alpha"):
        check_gradients(lambda x: np.sum(x**2), np.ones(3), backends=["probe"], unprobe_alpha=3)


class TestSecondOrder:
    def test_hessian_vector_products_pass(self, rng):
        x = rng.uniform(0.5, 1.5, 6)
        report = test_gradients(lambda x: np.sum(np.sin(x) * x**2) + np.prod(x[:3]), x, order=2)
        assert report.outcomes["reverse:hvp"].status == "pass"
        assert any("order 2" in n for n in report.notes)

    def test_wrong_second_order_is_caught(self, rng, temporary_backend):
        def compute(problem):
            return [2 * problem.diff_leaves[0]]

        def hvp_wrong(problem, vs):
            return [3 * vs[0]]  # the Hessian of sum(x**2) is 2 I

        def hvp_right(problem, vs):
            return [2 * vs[0]]

        gradtest.register_backend("sq_wrong", compute, default=False, hvp=hvp_wrong)
        gradtest.register_backend("sq_right", compute, default=False, hvp=hvp_right)
        try:
            report = check_gradients(lambda x: np.sum(x**2), rng.standard_normal(4),
                                     backends=["sq_right", "sq_wrong"], order=2)
            assert report.outcomes["sq_right:hvp"].status == "pass"
            assert report.outcomes["sq_wrong:hvp"].status == "fail"
            assert report.outcomes["sq_wrong"].status == "pass"
            broken = check_gradients(lambda x: np.sum(x**2), rng.standard_normal(4),
                                     backends=["sq_right", "sq_wrong"], order=2, broken_backends=["sq_wrong:hvp"])
            assert broken.outcomes["sq_wrong:hvp"].status == "broken" and broken.passed
        finally:
            gradtest.unregister_backend("sq_wrong")
            gradtest.unregister_backend("sq_right")

    def test_no_second_order_backend_warns(self, rng):
        with pytest.warns(gradtest.NoBackendWarning, match="second-order"):
            check_gradients(lambda x: np.sum(x**2), rng.standard_normal(3), backends=["forward"], order=2)

    def test_bad_order(self):
        with pytest.raises(ValueError, match="order"):
            check_gradients(np.sum, np.ones(2), order=3)
