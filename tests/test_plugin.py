"""The pytest plugin end to end: each scenario runs in an inner pytest session (pytester).

The inner sessions load the plugin with ``-p gradtest.pytest_plugin`` and with entry-point
autoloading off, so they behave the same whether or not gradtest is installed.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import gradtest
from gradtest import _softfail


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Runs the inner session with gradtest's plugin (and no other autoloaded plugin)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def run_(*args: str) -> pytest.RunResult:
        return pytester.runpytest("-p", "gradtest.pytest_plugin", "--strict-markers", *args)

    return run_


# Fake reports shaped like GradientReport / DispatchReport: the plugin relies on these attributes
# only, so these tests pin down the contract independently of the API.
FAKES = """
import dataclasses
from gradtest import _events

@dataclasses.dataclass
class Outcome:
    backend: str
    status: str
    message: str = ""

@dataclasses.dataclass
class Report:
    function_name: str
    outcomes: dict

    @property
    def passed(self):
        return not any(o.status in ("fail", "error", "unexpected_pass") for o in self.outcomes.values())

@dataclasses.dataclass
class DispatchReport:
    target: str
    library: str
    outcomes: dict

def emit_dispatch(target, call, opt):
    _events.emit(DispatchReport(target, "lib.so", {"call": Outcome("call", call), "opt": Outcome("opt", opt)}))

def emit(name, **statuses):
    outcomes = {}
    for backend, status in statuses.items():
        status, _, message = status.partition(":")
        outcomes[backend] = Outcome(backend, status, message)
    report = Report(name, outcomes)
    _events.emit(report)
    assert report.passed, f"{name}: a backend failed"
"""


# --- the softfail marker ------------------------------------------------------------------------


def test_marker_is_registered(run) -> None:
    result = run("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.softfail(reason=None):*"])


def test_softfail_marker_outcomes(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.softfail
        def test_assertion_fails():
            assert 1 == 2, "known wrong derivative"

        @pytest.mark.softfail
        def test_passes():
            assert 1 == 1

        @pytest.mark.softfail
        def test_other_exception():
            raise TypeError("bad argument")

        @pytest.mark.softfail(reason="issue 12")
        def test_with_reason():
            assert False

        @pytest.mark.softfail
        def test_explicit_fail():
            pytest.fail("told to fail")

        def test_unmarked_assertion():
            assert False

        def test_unmarked_exception():
            raise TypeError("unmarked")
        """
    )
    result = run("-rA")
    result.assert_outcomes(passed=1, xfailed=2, failed=3, errors=1)
    result.stdout.fnmatch_lines_random(
        [
            "XFAIL *::test_assertion_fails - softfail: AssertionError: known wrong derivative",
            "XFAIL *::test_with_reason - softfail: issue 12",
            "ERROR *::test_other_exception - TypeError: bad*",
            "FAILED *::test_explicit_fail - Failed: *",
            "FAILED *::test_unmarked_assertion*",
            "FAILED *::test_unmarked_exception*",
            "PASSED *::test_passes",
            "*= ERRORS =*",
            "*_ ERROR at call of test_other_exception _*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_softfail_marker_alone_does_not_fail_the_session(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.softfail
        def test_broken():
            assert False
        """
    )
    result = run()
    result.assert_outcomes(xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_softfail_marker_with_runxfail_fails(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.softfail
        def test_broken():
            assert False
        """
    )
    run("--runxfail").assert_outcomes(failed=1)


def test_softfail_marker_leaves_pytest_xfail_alone(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.softfail
        @pytest.mark.xfail(reason="xfail wins", strict=True)
        def test_both():
            assert False

        @pytest.mark.softfail
        @pytest.mark.xfail(raises=KeyError)
        def test_xfail_other_exception():
            assert False

        @pytest.mark.softfail
        def test_skipped():
            pytest.skip("not today")
        """
    )
    result = run("-rxs")
    result.assert_outcomes(xfailed=1, skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*XFAIL*test_both - xfail wins"])


def test_softfail_marker_in_junitxml(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.softfail
        def test_broken():
            assert False

        @pytest.mark.softfail
        def test_error():
            raise KeyError("k")
        """
    )
    run("--junitxml=out.xml")
    cases = _testcases(pytester.path / "out.xml")
    assert cases["test_broken"].find("skipped").get("type") == "pytest.xfail"
    assert cases["test_error"].find("failure") is not None


# --- gradtest.softfail --------------------------------------------------------------------------


def test_inline_softfail_outcomes(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import gradtest

        def test_true():
            assert gradtest.softfail(True) is True
            assert gradtest.softfail(np.float64(1.0) > 0) is True

        def test_false_continues():
            assert gradtest.softfail(1 > 2, "one is not greater") is False
            open("ran.txt", "w").close()
            assert gradtest.softfail(True)

        def test_false_then_real_failure():
            gradtest.softfail(False)
            assert 1 == 2, "a real failure"

        def test_counts():
            for i in range(5):
                gradtest.softfail(i % 2 == 0, f"odd {i}")

        def test_non_bool_array():
            gradtest.softfail(np.array([True, False]))

        def test_non_bool_int():
            gradtest.softfail(1)
        """
    )
    result = run("-rA")
    result.assert_outcomes(passed=1, xfailed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*XFAIL*test_false_continues - softfail at test_inline_softfail_outcomes.py:9: "
            "one is not greater",
            "*XFAIL*test_counts - softfail at test_inline_softfail_outcomes.py:19: "
            "2 of 5 false; odd 1",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*TypeError: softfail: value: expected a bool (the result of a check), got numpy.ndarray"]
    )
    result.stdout.fnmatch_lines(
        ["*TypeError: softfail: value: expected a bool (the result of a check), got int"]
    )
    result.stdout.fnmatch_lines(["*AssertionError: a real failure*"])
    assert (pytester.path / "ran.txt").exists()


def test_inline_softfail_properties_and_runxfail(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import gradtest

        def test_mixed():
            gradtest.softfail(True)
            gradtest.softfail(False, "broken here")
        """
    )
    result = run("--junitxml=out.xml")
    result.assert_outcomes(xfailed=1)
    props = _properties(_testcases(pytester.path / "out.xml")["test_mixed"])
    assert props == {
        "gradtest softfail: test_inline_softfail_properties_and_runxfail.py:4": "pass",
        "gradtest softfail: test_inline_softfail_properties_and_runxfail.py:5": "broken: broken here",
    }
    result = run("--runxfail")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*softfail at *:5: broken here*"])


@pytest.mark.parametrize(
    "value, name",
    [(None, "NoneType"), (1, "int"), (0.0, "float"), ("yes", "str"), (np.array(True), "numpy.ndarray")],
)
def test_softfail_rejects_non_bool(value: object, name: str) -> None:
    with pytest.raises(TypeError, match=rf"softfail: value: expected a bool .*, got {name}$"):
        gradtest.softfail(value)  # type: ignore[arg-type]


def test_softfail_rejects_non_str_message() -> None:
    with pytest.raises(TypeError, match="softfail: message: expected a str or None, got int"):
        gradtest.softfail(True, 3)  # type: ignore[arg-type]


def test_softfail_accepts_numpy_bool() -> None:
    seen = []
    with _softfail.collecting(lambda ok, message, where: seen.append((ok, message, where))):
        assert gradtest.softfail(np.bool_(False), "np") is False
        assert gradtest.softfail(np.bool_(True)) is True
    assert [(ok, message) for ok, message, _ in seen] == [(False, "np"), (True, "")]
    assert seen[0][2].startswith("test_plugin.py:")


def test_softfail_without_plugin_in_pytest_xfails() -> None:
    with _softfail.collecting(None):  # type: ignore[arg-type]
        assert gradtest.softfail(True) is True
        with pytest.raises(pytest.xfail.Exception, match="softfail at test_plugin.py:.*: why"):
            gradtest.softfail(False, "why")


def test_softfail_outside_pytest_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    with _softfail.collecting(None):  # type: ignore[arg-type]
        with pytest.warns(gradtest.SoftFailWarning, match="softfail at test_plugin.py:.*: outside"):
            assert gradtest.softfail(False, "outside") is False


def test_softfail_without_plugin_session(pytester: pytest.Pytester, monkeypatch) -> None:
    # In a subprocess: in process, the outer test's collector would still be active.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    _put_package_on_pythonpath(monkeypatch)
    pytester.makepyfile(
        """
        import gradtest

        def test_broken():
            gradtest.softfail(False, "stops here")
            raise RuntimeError("not reached")
        """
    )
    result = pytester.runpytest_subprocess("-rx", "-p", "no:gradtest")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["*XFAIL*test_broken - *softfail at *: stops here"])


# --- per-backend outcomes -----------------------------------------------------------------------


def test_backend_outcomes_in_summary(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(fakes=FAKES)
    pytester.makepyfile(
        """
        from fakes import emit

        def test_f():
            emit("f", finite_diff="pass", forward="pass", reverse="broken:tape drops a term")

        def test_g():
            emit("g", forward="pass", reverse="fail:max abs error 0.5 at args[0][1]")

        def test_nothing():
            pass
        """
    )
    result = run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= gradtest =*",
            "BROKEN   test_backend_outcomes_in_summary.py::test_f [[]gradtest f: reverse[]] "
            "- tape drops a term",
            "FAIL     test_backend_outcomes_in_summary.py::test_g [[]gradtest g: reverse[]] "
            "- max abs error 0.5 at args[[]0[]][[]1[]]",
            "gradtest: 5 results: 1 fail, 1 broken, 3 pass",
        ]
    )
    assert "[gradtest f: forward]" not in result.stdout.str()  # passes only when asked for
    for flag in ("-v", "-rA"):
        result = run(flag)
        result.stdout.fnmatch_lines(
            [
                "PASS     test_backend_outcomes_in_summary.py::test_f [[]gradtest f: finite_diff[]]",
                "PASS     test_backend_outcomes_in_summary.py::test_f [[]gradtest f: forward[]]",
                "BROKEN   *test_f [[]gradtest f: reverse[]]*",
                "PASS     *test_g [[]gradtest g: forward[]]",
            ]
        )


def test_no_summary_without_gradtest_checks(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile("def test_plain(): pass")
    result = run("-rA")
    assert "= gradtest =" not in result.stdout.str()


def test_backend_outcomes_in_junitxml(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(fakes=FAKES)
    pytester.makepyfile(
        """
        from fakes import emit, emit_dispatch

        def test_f():
            emit("f", forward="pass", reverse="broken:tape drops a term\\nsecond line")
            emit("f", forward="skipped:in skip_backends")

        def test_dispatch():
            emit_dispatch("kernel_add", call="pass", opt="skipped")
            emit("DispatchReport", call="pass", opt="unexpected_pass:remove opt_broken")
        """
    )
    result = run("--junitxml=out.xml")
    result.assert_outcomes(passed=1, failed=1)
    cases = _testcases(pytester.path / "out.xml")
    assert _properties(cases["test_f"]) == {
        "gradtest f: forward": "pass",
        "gradtest f: reverse": "broken: tape drops a term",
        "gradtest f#2: forward": "skipped: in skip_backends",
    }
    assert _properties(cases["test_dispatch"]) == {
        "gradtest kernel_add: call": "pass",
        "gradtest kernel_add: opt": "skipped",
        "gradtest DispatchReport: call": "pass",
        "gradtest DispatchReport: opt": "unexpected_pass: remove opt_broken",
    }


def test_listener_ignores_foreign_objects(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        from gradtest import _events

        def test_foreign():
            _events.emit(object())
            _events.emit(None)
        """
    )
    result = run("-rA")
    result.assert_outcomes(passed=1)
    assert "= gradtest =" not in result.stdout.str()


def test_real_checks_broken_backend_does_not_fail_failing_one_does(
    pytester: pytest.Pytester, run
) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import pytest
        import gradtest
        from gradtest.backends import unregister_backend

        def f(x):
            return np.sum(x ** 3)

        def right(x):
            return 3 * x ** 2

        def wrong(x):
            return 3 * x ** 2 + 1

        @pytest.fixture(autouse=True, scope="module")
        def backends():
            gradtest.register_backend("good", lambda p: [3 * p.diff_leaves[0] ** 2], default=False)
            gradtest.register_backend("bad", lambda p: [2 * p.diff_leaves[0]], default=False)
            yield
            unregister_backend("good")
            unregister_backend("bad")

        X = np.linspace(0.5, 2.0, 6)

        def test_one_broken():
            gradtest.test_gradients(f, X, gradient=wrong, backends=["good", "user"],
                                    broken_backends=["user"])

        def test_broken_and_failing():
            gradtest.test_gradients(f, X, gradient=wrong, backends=["good", "bad", "user"],
                                    broken_backends=["user"])

        def test_unexpected_pass():
            gradtest.test_gradients(f, X, gradient=right, backends=["user"], broken_backends=["user"])

        @pytest.mark.softfail
        def test_failing_but_softfail_marked():
            gradtest.test_gradients(f, X, backends=["bad"])
        """
    )
    result = run("-v", "--junitxml=out.xml")
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    mod = "test_real_checks_broken_backend_does_not_fail_failing_one_does.py"
    result.stdout.fnmatch_lines_random(
        [
            f"PASS     {mod}::test_one_broken [[]gradtest f: good[]]",
            f"BROKEN   {mod}::test_one_broken [[]gradtest f: user[]]*",
            f"PASS     {mod}::test_broken_and_failing [[]gradtest f: good[]]",
            f"FAIL     {mod}::test_broken_and_failing [[]gradtest f: bad[]]*",
            f"BROKEN   {mod}::test_broken_and_failing [[]gradtest f: user[]]*",
            f"UNEXPECTED_PASS {mod}::test_unexpected_pass [[]gradtest f: user[]]*",
            # the test XFAILs: its failed backend is broken, not FAIL
            f"BROKEN   {mod}::test_failing_but_softfail_marked [[]gradtest f: bad[]]*",
            "gradtest: 7 results: 1 fail, 1 unexpected_pass, 3 broken, 2 pass",
        ]
    )
    cases = _testcases(pytester.path / "out.xml")
    props = _properties(cases["test_broken_and_failing"])
    assert props["gradtest f: good"] == "pass"
    assert props["gradtest f: bad"].startswith("fail")
    assert props["gradtest f: user"].startswith("broken")
    assert cases["test_broken_and_failing"].find("failure") is not None
    assert cases["test_one_broken"].find("failure") is None
    assert cases["test_failing_but_softfail_marked"].find("skipped").get("type") == "pytest.xfail"
    assert _properties(cases["test_failing_but_softfail_marked"])["gradtest f: bad"].startswith("broken")


def test_backend_outcomes_with_xdist(pytester: pytest.Pytester, monkeypatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    _put_package_on_pythonpath(monkeypatch)
    pytester.makepyfile(fakes=FAKES)
    pytester.makepyfile(
        """
        import pytest
        from fakes import emit

        @pytest.mark.parametrize("i", range(4))
        def test_f(i):
            emit("f", forward="pass", reverse="broken:known")

        @pytest.mark.softfail
        def test_soft():
            assert False
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "xdist.plugin", "-p", "gradtest.pytest_plugin", "-n", "2", "--junitxml=out.xml"
    )
    result.assert_outcomes(passed=4, xfailed=1)
    result.stdout.fnmatch_lines(["BROKEN   *test_f[[]3[]] [[]gradtest f: reverse[]] - known",
                                 "gradtest: 8 results: 4 broken, 4 pass"])
    props = _properties(_testcases(pytester.path / "out.xml")["test_f[2]"])
    assert props == {"gradtest f: forward": "pass", "gradtest f: reverse": "broken: known"}


# --- helpers ------------------------------------------------------------------------------------


def _testcases(path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {case.get("name"): case for case in root.iter("testcase")}


def _properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def _put_package_on_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses run in pytester's directory: give them this gradtest by absolute path."""
    package_root = str(Path(gradtest.__file__).resolve().parents[1])
    paths = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(os.path.abspath(p) for p in paths))


# --- issue 12, item 9: what the summary records, and whose frames a failure shows ------------


def test_failure_points_at_the_users_line(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import gradtest

        def test_wrong():
            gradtest.test_gradients(lambda x: np.sum(x ** 2), np.ones(3), gradient=lambda x: 3 * x,
                                    backends=["user"])

        def test_dispatch_alloc():
            gradtest.test_dispatch(lambda x: np.sum(x.astype(np.float64)), np.ones(3, np.float32))
        """
    )
    result = run()
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert ">       gradtest.test_gradients(lambda x: np.sum(x ** 2)" in out
    assert ">       gradtest.test_dispatch(" in out
    # gradtest's own frames are hidden: no line of api.py or dispatch.py in the tracebacks
    assert "api.py:" not in out and "dispatch.py:" not in out
    assert "raise error" not in out


def test_summary_records_only_checks_that_decided_the_outcome(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import pytest
        import gradtest

        def f(x):
            return np.sum(x ** 2)

        def test_expected_failure_is_asserted():
            with pytest.raises(AssertionError, match="gradient check failed"):
                gradtest.test_gradients(f, np.ones(3), gradient=lambda x: 3 * x, backends=["user"])

        def test_check_forms_decide_nothing():
            assert not gradtest.check_gradients(f, np.ones(3), gradient=lambda x: 3 * x).passed
            assert not gradtest.check_dispatch(lambda x: np.sum(x.astype(np.float64)),
                                               np.ones(3, np.float32)).passed

        def test_passing():
            gradtest.test_gradients(f, np.ones(3), gradient=lambda x: 2 * x, backends=["user"])

        @pytest.mark.xfail(reason="known", strict=True)
        def test_xfail_marked():
            gradtest.test_gradients(f, np.ones(3), gradient=lambda x: 3 * x, backends=["user"])
        """
    )
    result = run("-rA")
    result.assert_outcomes(passed=3, xfailed=1)
    section = result.stdout.str().split("= gradtest =")[-1].split("short test summary")[0]
    assert "\nFAIL " not in section and "check_forms" not in section and "asserted" not in section
    result.stdout.fnmatch_lines_random([
        "BROKEN   *::test_xfail_marked [[]gradtest f: user[]]*",
        "gradtest: 2 results: 1 broken, 1 pass",
    ])
