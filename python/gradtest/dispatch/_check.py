"""The dispatch checks' entry points: :func:`check_dispatch` validates what both checks share and
routes a Python callable to the Python-target check, anything else to the native one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .. import _events
from .._names import string_list
from ._native import check_native
from ._policy import DEFAULT_MAX_DEPTH, DEFAULT_TIMEOUT
from ._python import callable_name, check_dispatch_python
from ._report import DispatchReport
from ._targets import is_python_target

__all__ = ["check_dispatch", "test_dispatch"]


def check_dispatch(
    target: Any,
    *args: Any,
    target_modules: Sequence[str] | None = None,
    allow: Iterable[str] = (),
    call_broken: bool = False,
    opt_broken: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
    signature: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **unexpected: Any,
) -> DispatchReport:
    """Checks a compiled C function for crashes (call) and for dispatch, allocation and calls out
    of its library (opt), as LuxTestUtils' ``@jet`` does for Julia functions.

    Parameters
    ----------
    target : ctypes or cffi function pointer, int, str, CKernel or Python callable
        The function: a ctypes function (its ``argtypes``/``restype`` give the signature), a cffi
        function, a runtime address, ``"path/lib.so:symbol"`` or an object with a
        ``__gradtest_dispatch__()`` method returning ``(target, signature)`` (gradtest's CKernel).
        Any other callable is a NumPy function: it runs on reverse-mode tracked arrays and the
        check reports type instability instead (see :mod:`gradtest.dispatch._python`; only
        ``allow``, ``call_broken`` and ``opt_broken`` apply, and the report is a
        ``PythonDispatchReport``).
    *args
        Arguments of the call check, converted to the C signature (numpy arrays for pointers,
        C-contiguous and of the pointee's dtype; Python numbers for scalars). Without arguments
        the call check is skipped. For a Python function: its positional arguments, whose
        floating-point arrays (inside any tree) are tracked.
    target_modules : list of str, optional
        Objects whose code is followed besides the target's own (paths or names of loaded shared
        objects). Default: the list set by :func:`dispatch_target_modules`, else only the target's
        own object.
    allow : iterable of str
        fnmatch patterns that silence findings: matched against the callee's name, the name of
        the function holding the finding and the finding's kind (``"indirect_call"``).
    call_broken, opt_broken : bool
        Mark that half as broken: it is expected to fail; passing unexpectedly fails the check.
    max_depth : int
        Call depth below the target that the opt check follows; deeper calls become
        ``unresolved`` findings.
    signature : str, optional
        The C signature, e.g. ``"double(const double*, size_t)"``, when the target does not carry
        one (an address, a ``"lib.so:symbol"`` string, a ctypes function without ``argtypes``).
    timeout : float
        Time limit of the guarded call in seconds.

    Returns
    -------
    DispatchReport
        ``report.passed``, ``report.outcomes["call"]``/``["opt"]``, ``report.findings``.
    """
    _refuse_unexpected(unexpected)
    allow_t = tuple(string_list(allow, "allow", "symbol patterns"))
    if is_python_target(target):
        return _check_python(target, args, target_modules=target_modules, allow=allow_t,
                             call_broken=call_broken, opt_broken=opt_broken, max_depth=max_depth,
                             signature=signature, timeout=timeout)
    return check_native(target, args, target_modules=target_modules, allow=allow_t, call_broken=call_broken,
                        opt_broken=opt_broken, max_depth=max_depth, signature=signature, timeout=timeout)


def _check_python(f: Any, args: tuple, *, target_modules: Any, allow: tuple[str, ...], call_broken: bool,
                  opt_broken: bool, max_depth: Any, signature: Any, timeout: Any) -> DispatchReport:
    """Runs the type-stability check of a Python callable, refusing the options that only mean
    something for machine code."""
    for name, value, default in (("target_modules", target_modules, None), ("signature", signature, None),
                                 ("max_depth", max_depth, DEFAULT_MAX_DEPTH), ("timeout", timeout, DEFAULT_TIMEOUT)):
        if value is not default and value != default:
            raise TypeError(f"{name}: only applies to C targets; {callable_name(f)} is a Python function")
    return check_dispatch_python(f, tuple(args), allow, bool(call_broken), bool(opt_broken))


def _refuse_unexpected(unexpected: dict[str, Any]) -> None:
    """A TypeError for keyword arguments check_dispatch does not take; ``broken=`` (the gradient
    checks' word) gets the seed's hint."""
    if not unexpected:
        return
    if "broken" in unexpected:
        raise TypeError("check_dispatch() got an unexpected keyword argument 'broken': the two halves are "
                        "marked separately, use call_broken or opt_broken (as LuxTestUtils' @jet)")
    raise TypeError(f"check_dispatch() got unexpected keyword argument(s) {', '.join(map(repr, unexpected))}")


def test_dispatch(target: Any, *args: Any, **kwargs: Any) -> DispatchReport:
    """Like :func:`check_dispatch`, and raises ``AssertionError`` with the report when a half
    fails, errors or passes unexpectedly (broken halves that fail are fine).

    Returns
    -------
    DispatchReport
        The report, when the check passed.
    """
    __tracebackhide__ = True  # pytest: point at the caller's line, not at gradtest's
    report = check_dispatch(target, *args, **kwargs)
    error = None if report.passed else AssertionError("\n" + str(report))
    # only the test_ form reports to the pytest plugin: its result decides the test
    _events.emit(report, error)
    if error is not None:
        raise error
    return report


test_dispatch.__test__ = False  # type: ignore[attr-defined]
