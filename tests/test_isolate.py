"""check_gradients(..., isolate=True): a Python f's crash or hang is a report, not the end of
the caller's process, and leaves no process behind."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import gradtest
from gradtest import GroundTruthError, NoBackendWarning
from gradtest.ckernel import KernelCrash, KernelTimeout
from gradtest.forward import Dual
from gradtest.reverse import Tracked

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="isolation needs os.fork")

X = np.linspace(0.1, 1.0, 4)


def grad(x):
    return 2 * x


def segfault():
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def test_a_crash_in_f_is_a_report_without_ground_truth():
    def f(x):
        segfault()
        return np.sum(x ** 2)

    report = gradtest.check_gradients(f, X, gradient=grad, isolate=True)
    assert not report.passed
    crash = report.ground_truth_error
    assert isinstance(crash, KernelCrash) and crash.signal_name == "SIGSEGV"
    assert "f crashed the isolated check in f's first call: killed by SIGSEGV" in str(crash)
    with pytest.raises(GroundTruthError, match="killed by SIGSEGV"):
        gradtest.test_gradients(f, X, gradient=grad, isolate=True)


def test_a_backend_that_crashes_is_an_error_and_the_others_are_still_checked():
    def f(x):
        if isinstance(x, Dual):  # a C extension that cannot take forward mode's arrays
            segfault()
        return np.sum(x ** 2)

    report = gradtest.check_gradients(f, X, gradient=grad, isolate=True)
    status = {name: o.status for name, o in report.outcomes.items()}
    assert status == {"user": "pass", "forward": "error", "reverse": "pass"}
    forward = report.outcomes["forward"]
    assert isinstance(forward.exception, KernelCrash) and forward.exception.stage == "backend forward"
    assert forward.message == ("KernelCrash: f crashed the isolated check while backend forward ran: "
                               "killed by SIGSEGV (signal 11)")
    # marked broken, the crash is expected, and the test passes
    gradtest.test_gradients(f, X, gradient=grad, isolate=True, broken_backends=["forward"])


def test_a_hang_is_killed_after_timeout_with_every_process_f_started(tmp_path: Path):
    pid_file = tmp_path / "sleeper.pid"

    def f(x):
        if isinstance(x, Tracked):
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            pid_file.write_text(str(sleeper.pid))
            time.sleep(300)
        return np.sum(x ** 2)

    start = time.monotonic()
    report = gradtest.check_gradients(f, X, gradient=grad, isolate=True, timeout=3)
    assert time.monotonic() - start < 60
    reverse = report.outcomes["reverse"]
    assert reverse.status == "error" and isinstance(reverse.exception, KernelTimeout)
    assert reverse.exception.limit == 3.0
    assert "ran past timeout=3 s while backend reverse ran" in reverse.message
    assert report.outcomes["forward"].status == "pass" and report.outcomes["user"].status == "pass"
    pid = int(pid_file.read_text())
    assert _gone(pid), f"process {pid}, started by f, outlived the check"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):  # killed, waiting for init to reap it
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("ending, how", [
    (lambda: os._exit(3), "it exited with status 3"),
    (lambda: sys.exit(4), "it raised SystemExit or KeyboardInterrupt"),
])
def test_f_ending_the_process_is_reported(ending, how):
    def f(x):
        ending()
        return np.sum(x)

    report = gradtest.check_gradients(f, X, isolate=True)
    assert how in str(report.ground_truth_error)
    assert report.notes == [f"isolate: {report.ground_truth_error}"]


def test_an_isolated_check_reports_what_one_in_process_does():
    def f(x, y):
        return np.sum(np.sin(x) * y["w"] ** 2)

    args = (X.copy(), {"w": X[::-1].copy()})
    before = [a.copy() for a in (args[0], args[1]["w"])]
    here = gradtest.check_gradients(f, *args)
    there = gradtest.check_gradients(f, *args, isolate=True)
    assert list(there.outcomes) == list(here.outcomes)
    for name in here.outcomes:
        assert there.outcomes[name].status == here.outcomes[name].status == "pass"
        assert there.outcomes[name].max_abs_err == here.outcomes[name].max_abs_err
    np.testing.assert_array_equal(there.ground_truth[0], here.ground_truth[0])
    np.testing.assert_array_equal(args[0], before[0])
    np.testing.assert_array_equal(args[1]["w"], before[1])


def test_warnings_of_the_child_reach_the_caller():
    with pytest.warns(NoBackendWarning, match=r"none of the selected backends \(user\) has a second-order mode"):
        gradtest.check_gradients(lambda x: np.sum(x ** 2), X, backends=["user"], gradient=grad, order=2,
                                 isolate=True)


def test_a_ground_truth_tree_that_does_not_pickle_stays_in_the_child():
    class Local:  # a class defined in a function does not pickle
        def __init__(self, w):
            self.w = w

    import optree

    optree.register_pytree_node(Local, lambda p: ((p.w,), None, None), lambda _, c: Local(*c),
                                namespace="gradtest")
    try:
        report = gradtest.check_gradients(lambda p: np.sum(p.w ** 3), Local(X.copy()), isolate=True)
    finally:
        optree.unregister_pytree_node(Local, namespace="gradtest")
    assert report.passed and report.ground_truth is None
    assert any("does not pickle" in note for note in report.notes)


@pytest.mark.parametrize("options, error, match", [
    ({"timeout": 5}, ValueError, "timeout: needs isolate=True"),
    ({"isolate": "yes"}, TypeError, "isolate: expected True or False, got str"),
    ({"isolate": True, "timeout": -1}, ValueError, "timeout: expected a number of seconds > 0, got -1"),
    ({"isolate": True, "timeout": float("inf")}, ValueError, "timeout: expected a number of seconds > 0"),
])
def test_bad_isolation_options_are_named(options, error, match):
    with pytest.raises(error, match=match):
        gradtest.check_gradients(lambda x: np.sum(x), X, **options)


def test_kernel_errors_survive_pickling():
    import pickle

    crash = KernelCrash("boom", stage="backend forward", signal=11, signal_name="SIGSEGV")
    back = pickle.loads(pickle.dumps(crash))
    assert (type(back), str(back), back.stage, back.signal, back.signal_name) == \
        (KernelCrash, "boom", "backend forward", 11, "SIGSEGV")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timeout = pickle.loads(pickle.dumps(KernelTimeout("late", stage="s", limit=2.0)))
    assert timeout.limit == 2.0
