"""``gradtest.softfail``: record a check as known-broken instead of failing the test.

The pytest plugin installs a collector for the duration of each test call; :func:`softfail` hands
every result to it, and the plugin turns a test with a false result into an expected failure once
the test has finished. The test keeps running after a false result, so one broken check hides
none of the checks after it.

This module imports neither pytest nor NumPy: it is loaded with every ``import gradtest``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

__all__ = ["SoftFailWarning", "softfail"]

# (ok, message, where) -> None; installed by the pytest plugin around each test call.
Collector = Callable[[bool, str, str], None]

_collector: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "gradtest_softfail_collector", default=None
)


class SoftFailWarning(UserWarning):
    """Issued by :func:`softfail` for a false result outside a pytest test."""


@contextlib.contextmanager
def collecting(collector: Collector) -> Iterator[None]:
    """Sends the results of :func:`softfail` to ``collector`` for the ``with`` block."""
    token = _collector.set(collector)
    try:
        yield
    finally:
        _collector.reset(token)


def _is_bool(value: object) -> bool:
    if isinstance(value, bool):
        return True
    # A NumPy bool can only exist if NumPy is imported; checking sys.modules keeps this module
    # free of the import.
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.bool_)


def _caller_location(depth: int) -> str:
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:  # pragma: no cover - only with a shallower stack than ours
        return "<unknown>"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def softfail(value: bool, message: str | None = None) -> bool:
    """Records a check that is allowed to fail: ``True`` passes, ``False`` marks the test broken.

    The inline counterpart of the ``@pytest.mark.softfail`` marker and of Julia's
    ``@test_softfail``. Inside a pytest test (with gradtest's plugin, loaded automatically when
    gradtest is installed), a false value does not stop the test: it is recorded, the test runs
    on, and when it finishes without a failure pytest reports it as an expected failure
    (``XFAIL``), the way a broken test is reported. A real failure later in the test still fails
    it. Every result also appears in the JUnit XML as a ``gradtest softfail: FILE:LINE`` test
    property.

    Parameters
    ----------
    value : bool
        The result of the check, a Python ``bool`` or a NumPy bool scalar. Anything else (an
        array, a number, ``None``) is a mistake in the test and raises :class:`TypeError`: to
        soft-check an array, reduce it first, e.g. ``softfail(bool(np.all(a == b)))``.
    message : str, optional
        Said in the test report when ``value`` is false.

    Returns
    -------
    bool
        ``value`` as a Python bool, so the call can sit in a condition.

    Raises
    ------
    TypeError
        If ``value`` is not a bool.

    Notes
    -----
    Outside pytest, a false value issues a :class:`SoftFailWarning`. Inside a pytest test run
    without gradtest's plugin (``-p no:gradtest``), it calls ``pytest.xfail``, which stops the
    test at once. Results are collected per thread of execution: call ``softfail`` from the
    test's own thread.

    Examples
    --------
    >>> import gradtest
    >>> gradtest.softfail(1 + 1 == 2)
    True
    """
    __tracebackhide__ = True  # pytest: point at the caller, not at this function
    if not _is_bool(value):
        kind = type(value)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise TypeError(f"softfail: value: expected a bool (the result of a check), got {name}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"softfail: message: expected a str or None, got {type(message).__name__}")
    ok = bool(value)
    where = _caller_location(1)
    collector = _collector.get()
    if collector is not None:
        collector(ok, message or "", where)
        return ok
    if ok:
        return True
    text = f"softfail at {where}" + (f": {message}" if message else "")
    if (
        "pytest" in sys.modules
        and os.environ.get("PYTEST_CURRENT_TEST")
        and threading.current_thread() is threading.main_thread()
    ):
        import pytest

        pytest.xfail(text)
    warnings.warn(text, SoftFailWarning, stacklevel=2)
    return False
