"""gt_guard_run (csrc/core/guard.c) through the _ckernel glue: C work that ends in every way the
guard must report, run in forked children of the test process."""

from __future__ import annotations

import time

import pytest

from gradtest import _ckernel

CODES = _ckernel.status_codes()


def run(kind: str, cap: int = 16, timeout: float = 0.0) -> dict:
    status, fn_status, signal, signal_name, timed_out, exit_code, stage, payload = _ckernel._guard_selftest(
        kind, cap, timeout)
    return dict(status=status, fn_status=fn_status, signal=signal, signal_name=signal_name,
                timed_out=timed_out, exit_code=exit_code, stage=stage, payload=payload)


def test_normal_run_returns_the_payload_and_stage():
    r = run("ok")
    assert r["status"] == CODES["OK"]
    assert r["fn_status"] == 0
    assert r["payload"] == b"ok"
    assert r["stage"] == "selftest"
    assert r["signal"] == 0 and not r["timed_out"]


def test_failure_status_is_passed_back():
    r = run("fail")
    assert r["status"] == CODES["OK"]
    assert r["fn_status"] == 7
    assert r["payload"] == b""


@pytest.mark.parametrize("kind, name", [("segv", "SIGSEGV"), ("abort", "SIGABRT"), ("fpe", "SIGFPE"),
                                        ("bus", "SIGBUS")])
def test_signals_are_reported_with_the_stage(kind, name):
    r = run(kind)
    assert r["status"] == CODES["ECRASH"]
    assert r["signal_name"] == name
    assert r["stage"] == "selftest"
    assert r["payload"] == b""


def test_exit_without_reporting():
    r = run("exit")
    assert r["status"] == CODES["ECRASH"]
    assert r["signal"] == 0
    assert r["exit_code"] == 3


def test_hang_is_killed_at_the_limit():
    start = time.perf_counter()
    r = run("hang", timeout=0.2)
    elapsed = time.perf_counter() - start
    assert r["status"] == CODES["ETIMEOUT"]
    assert r["timed_out"] and r["signal_name"] == "SIGKILL"
    assert r["stage"] == "selftest"
    assert 0.15 < elapsed < 10


def test_payload_is_truncated_to_the_buffer():
    r = run("big", cap=5000)
    assert r["status"] == CODES["OK"]
    assert r["payload"] == b"x" * 5000


def test_zero_capacity():
    r = run("ok", cap=0)
    assert r["status"] == CODES["OK"]
    assert r["payload"] == b""


def test_many_runs_leak_no_descriptors():
    import os

    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for kind in ("ok", "segv", "fail") * 20:
        run(kind)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
