"""gradtest's pytest plugin: per-backend outcomes in pytest's reports, and soft failures.

pytest loads this module through the ``pytest11`` entry point ``gradtest`` once gradtest is
installed; in a source checkout, pass ``-p gradtest.pytest_plugin`` instead (never both: pluggy
refuses to register one module under two names).

What it does
------------
* Around each test call it listens for the reports that ``test_gradients`` and ``test_dispatch``
  emit (:mod:`gradtest._events`; the ``check_`` forms decide nothing and emit nothing). Each
  backend's outcome of a check that decided the test's outcome becomes a test property
  ``("gradtest f: reverse", "broken: ...")`` on the test item, so it lands in ``--junitxml`` (as
  ``<property>`` of the test case) and travels with the report through pytest-xdist; a terminal
  summary section lists them with counts. A check whose failure the test caught
  (``pytest.raises``) decided nothing and is left out; in a test reported as an expected failure
  (the ``softfail`` or ``xfail`` marker) the failed backends are listed as ``broken``.
* The ``softfail`` marker: an ``AssertionError`` in a marked test reports it as an expected
  failure (``XFAIL``, "broken"), a pass stays a pass, any other exception is reported as an error.
* :func:`gradtest.softfail` inside a test records a broken check without stopping the test; a
  test with a broken check and no failure is reported as ``XFAIL``.

Why test properties and not pytest's subtests
---------------------------------------------
pytest 9's built-in subtests would give each backend its own report, but (1) at the default
verbosity they print and count nothing for passed and expected-failed subtests, so a broken
backend would be invisible exactly where it should show; (2) the JUnit XML writer folds all
subtest reports into the parent's test case, so an expected-failed subtest marks a passing test
as skipped there, and no backend names appear; (3) creating subtest reports from a hook needs
pytest internals, and pytest 8 has no subtests at all. Test properties are public API since
pytest 3, survive xdist, and name every backend in the JUnit XML; the summary section below makes
them visible in the terminal.

The module stays light: importing it must not slow down test suites that never use gradtest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from gradtest import _events, _softfail

PROPERTY_PREFIX = "gradtest "
# The order statuses are counted and listed in: most urgent first.
_STATUS_ORDER = ("fail", "error", "unexpected_pass", "broken", "skipped", "pass")
_MAX_MESSAGE = 300


@dataclass
class _Softfails:
    """softfail() results at one source location of one test."""

    passed: int = 0
    broken: int = 0
    first_message: str = ""


@dataclass
class _TestRecord:
    """What one test call emitted, kept on the item while it runs."""

    item: pytest.Item
    labels: Counter[str] = field(default_factory=Counter)
    softfails: dict[str, _Softfails] = field(default_factory=dict)
    reports: list[tuple[Any, BaseException | None]] = field(default_factory=list)

    def on_report(self, report: Any, raised: BaseException | None = None) -> None:
        """Listener for :mod:`gradtest._events`: kept until the test's outcome is known."""
        self.reports.append((report, raised))

    def flush_reports(self, test_exception: BaseException | None) -> None:
        """One test property per backend outcome of each check that decided the outcome: one
        that raised nothing, or whose exception is the one the test ended with."""
        for report, raised in self.reports:
            if raised is None or _in_chain(raised, test_exception):
                self._record(report)
        self.reports.clear()

    def _record(self, report: Any) -> None:
        outcomes = getattr(report, "outcomes", None)
        if not isinstance(outcomes, Mapping):
            return  # not a report this plugin understands; the API reports them anyway
        name = _report_name(report)
        self.labels[name] += 1
        label = name if self.labels[name] == 1 else f"{name}#{self.labels[name]}"
        for backend, outcome in outcomes.items():
            status = str(getattr(outcome, "status", "error"))
            message = str(getattr(outcome, "message", "") or "")
            self.item.user_properties.append(
                (f"{PROPERTY_PREFIX}{label}: {backend}", _property_value(status, message))
            )

    def on_softfail(self, ok: bool, message: str, where: str) -> None:
        """Collector for :func:`gradtest.softfail`."""
        entry = self.softfails.setdefault(where, _Softfails())
        if ok:
            entry.passed += 1
        else:
            entry.broken += 1
            if not entry.first_message:
                entry.first_message = message or "value was False"

    def flush_softfails(self) -> list[str]:
        """Writes one property per softfail() location; returns the broken ones' descriptions."""
        broken = []
        for where, entry in self.softfails.items():
            if entry.broken:
                total = entry.broken + entry.passed
                counts = f"{entry.broken} of {total} false" if total > 1 else ""
                text = "; ".join(part for part in (counts, entry.first_message) if part)
                broken.append(f"softfail at {where}: {text}")
                value = _property_value("broken", text)
            else:
                value = "pass"
            self.item.user_properties.append((f"{PROPERTY_PREFIX}softfail: {where}", value))
        self.softfails.clear()
        return broken


def _in_chain(raised: BaseException, exc: BaseException | None) -> bool:
    """Whether ``raised`` is ``exc`` or one of its causes/contexts (a test may wrap it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if exc is raised:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


_FAILED_STATUSES = ("fail", "error", "unexpected_pass")


def _mark_broken(properties: list[tuple[str, Any]]) -> None:
    """In a test reported as an expected failure, its failed backends are broken, not FAIL."""
    for i, (name, value) in enumerate(properties):
        if isinstance(name, str) and name.startswith(PROPERTY_PREFIX):
            status, sep, message = str(value).partition(": ")
            if status in _FAILED_STATUSES:
                properties[i] = (name, f"broken{sep}{message}")


def _report_name(report: Any) -> str:
    """What was checked: a GradientReport's ``function_name``, a DispatchReport's ``target``."""
    for attribute in ("function_name", "target"):
        value = getattr(report, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(report).__name__


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _property_value(status: str, message: str) -> str:
    """``status`` or ``status: first line of message``; the status is what precedes the colon."""
    line = _first_line(message)
    return f"{status}: {line}" if line else status


_RECORD = pytest.StashKey[_TestRecord]()
_REPORTER_NAME = "gradtest-reporter"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "softfail(reason=None): the test is allowed to fail an assertion; an AssertionError "
        "reports it as an expected failure (broken), a pass as a pass, any other exception as "
        "an error.",
    )
    config.pluginmanager.register(_Reporter(config), _REPORTER_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin(_REPORTER_NAME)
    if reporter is not None:
        config.pluginmanager.unregister(reporter)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    record = _TestRecord(item)
    item.stash[_RECORD] = record
    with _events.listening(record.on_report), _softfail.collecting(record.on_softfail):
        return (yield)


def _softfail_reason(item: pytest.Item, exc: BaseException) -> str:
    marker = item.get_closest_marker("softfail")
    reason = None
    if marker is not None:
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
    if reason:
        return f"softfail: {reason}"
    line = _first_line(str(exc))
    return f"softfail: {type(exc).__name__}" + (f": {line}" if line else "")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Properties must be on the item before the report copies them.
    broken_softfails = []
    if call.when == "call" and _RECORD in item.stash:
        record = item.stash[_RECORD]
        record.flush_reports(call.excinfo.value if call.excinfo is not None else None)
        broken_softfails = record.flush_softfails()
        del item.stash[_RECORD]  # the record refers to the item; let both go with the item
    report = _mark_expected_failure((yield), item, call, broken_softfails)
    if call.when == "call" and report.skipped and hasattr(report, "wasxfail"):
        # the teardown report, which the summary reads, copies the item's properties again
        _mark_broken(item.user_properties)
        _mark_broken(report.user_properties)
    return report


def _mark_expected_failure(report: pytest.TestReport, item: pytest.Item, call: pytest.CallInfo[None],
                           broken_softfails: list[str]) -> pytest.TestReport:
    """The softfail marker's and softfail()'s verdicts on a finished call."""
    if call.when != "call" or hasattr(report, "wasxfail") or report.skipped:
        return report  # setup/teardown, or pytest's xfail/skip already decided
    runxfail = item.config.option.runxfail
    if item.get_closest_marker("xfail") is not None and not runxfail:
        return report  # an xfail marker decides, also when its raises= did not match
    if call.excinfo is not None:
        exc = call.excinfo.value
        if item.get_closest_marker("softfail") is None or not isinstance(exc, Exception):
            return report  # unmarked, or pytest.fail()/exit: pytest's own outcome stands
        if isinstance(exc, AssertionError):
            if not runxfail:
                report.outcome = "skipped"
                report.wasxfail = _softfail_reason(item, exc)
        else:
            report.gradtest_softfail_error = True
        return report
    if broken_softfails and report.passed:
        if runxfail:
            report.outcome = "failed"
            report.longrepr = "\n".join(broken_softfails)
        else:
            report.outcome = "skipped"
            report.wasxfail = "; ".join(broken_softfails)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    # unittest's distinction: an assertion is a failure, any other exception an error. In a
    # softfail test the failure is expected, so the error must stand out from it.
    if report.when == "call" and report.failed and getattr(report, "gradtest_softfail_error", False):
        return "error", "E", "ERROR"
    return None


def _results_of(report: pytest.TestReport) -> list[tuple[str, str, str, str, str]]:
    results = []
    for name, value in report.user_properties:
        if not (isinstance(name, str) and name.startswith(PROPERTY_PREFIX)):
            continue
        label, sep, backend = name[len(PROPERTY_PREFIX) :].rpartition(": ")
        if not sep:
            continue
        status, _, message = str(value).partition(": ")
        results.append((report.nodeid, label, backend, status, message))
    return results


_Result = tuple[str, str, str, str, str]  # nodeid, label, backend, status, message


class _Reporter:
    """Collects per-backend outcomes from the reports and prints them after the run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[_Result] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Read from the report, not the item: under pytest-xdist only reports reach the
        # controller. The teardown report carries every property the test recorded.
        if report.when == "teardown":
            self.results.extend(_results_of(report))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        show_passes = terminalreporter.verbosity > 0 or terminalreporter.hasopt("P")
        counts = Counter(status for *_, status, _ in self.results)
        terminalreporter.section("gradtest", sep="=")
        for nodeid, label, backend, status, message in self.results:
            if status == "pass" and not show_passes:
                continue
            line = f"{status.upper():<8} {nodeid} [gradtest {label}: {backend}]"
            terminalreporter.write_line(line + (f" - {message}" if message else ""))
        order = [s for s in _STATUS_ORDER if s in counts] + sorted(set(counts) - set(_STATUS_ORDER))
        summary = ", ".join(f"{counts[s]} {s}" for s in order)
        terminalreporter.write_line(f"gradtest: {len(self.results)} results: {summary}")
