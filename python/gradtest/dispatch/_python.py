"""The dispatch check of Python functions: type stability of NumPy code on tracked arrays.

:func:`gradtest.check_dispatch` routes a plain Python callable here (its report types are in
:mod:`gradtest.dispatch._report`). As LuxTestUtils' ``@jet``
runs JET's ``test_call`` and ``test_opt``, the check has two halves:

* **call**: ``f`` runs on reverse-mode tracked arrays (:class:`gradtest.reverse.Tracked`) in place
  of its floating-point array arguments; an exception is a finding naming it, and a
  ``NotImplementedError`` raised by gradtest's tracked arrays (a NumPy function reverse mode does
  not support) is an ``unsupported`` finding rather than a crash;
* **opt**: every NumPy operation that ``f`` applies to a tracked array is observed from outside
  (the arrays are a subclass of ``Tracked`` whose NumPy hooks look at the operands and results,
  on a tape marked ``observed`` so that every operation passes through those hooks) and the
  instabilities are reported with the line of ``f``'s code that caused them.

Rules of the opt half (one finding per kind, operation and source line, with a count):

``type_instability``
    An operation returns a floating-point array wider than both the widest floating input of
    ``f`` (the *reference* dtype) and the widest tracked operand of the operation itself: the
    place where a float32 computation turns into float64 (a float64 constant array, an
    ``np.float64`` scalar, ``astype(np.float64)``, ``np.float_power``). Later operations on the
    widened value are not reported again. With float64 inputs nothing is wider, so this kind
    cannot occur. Python ``float`` scalars do not widen (NumPy 2, NEP 50).
``object_dtype``
    An operation has an object-dtype array among its operands or results (reverse mode turns
    such a result into float64 silently).
``dropped_tracking``
    A floating value leaves the tracked world: ``float(x)``, ``x.item()``, ``x.tolist()``,
    ``np.asarray(x)``/``np.array(x)`` (which fails on tracked arrays: the call half reports that
    too) and ``x.astype`` to a floating type reverse mode does not track (float16, longdouble).
    Piecewise-constant operations (``floor``, ``round``, comparisons, ...) return plain arrays by
    design (their derivative is zero) and are not reported; neither is reading ``x.value``.
``untracked_output``
    A floating leaf of ``f``'s output is not tracked: the output does not depend on the tracked
    inputs (its gradient would be silently zero). Not reported when a ``dropped_tracking``
    finding already explains it.

Only the operations ``f`` calls are observed, not those inside gradtest's own implementation of
a NumPy function (``np.var`` is one operation, whatever it is made of). The source line is the
innermost frame of ``f``'s call tree outside gradtest and NumPy.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import reverse
from .._tree import flatten_args, output_leaves, refuse_subclasses, tree_map_outputs
from ..report import Outcome
from ._policy import matches
from ._report import PythonDispatchFinding, PythonDispatchReport, half_status, opt_verdict

__all__ = ["callable_name", "check_dispatch_python"]

# the gradtest package (this module is in gradtest/dispatch/)
_GRADTEST_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep
_TRACKED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------------
# the observed arrays

class _Session:
    """The state of one check: its reference dtype, findings, operation count and nesting depth."""

    def __init__(self, reference: np.dtype | None) -> None:
        self.reference = reference
        self.depth = 0              # > 0 while gradtest's own implementation of an operation runs
        self.operations = 0
        self.found: dict[tuple, list[Any]] = {}   # key -> [kind, symbol, source, code, din, dout, count]
        self.runner: types.CodeType | None = None

    def add(self, kind: str, symbol: str, din: str, dout: str, frame: Any) -> None:
        source, code = _user_line(frame, self.runner)
        key = (kind, symbol, source, din, dout)
        entry = self.found.get(key)
        if entry is None:
            self.found[key] = [kind, symbol, source, code, din, dout, 1]
        else:
            entry[6] += 1


# id(tape) -> session; the tape is private to one check, so this is the check an array belongs to
_SESSIONS: dict[int, _Session] = {}


def _session_of(x: Any) -> _Session | None:
    return _SESSIONS.get(id(getattr(x, "tape", None)))


def _describe(v: Any) -> str:
    if isinstance(v, (reverse.Tracked, np.ndarray, np.generic)):
        return str(v.dtype)
    return type(v).__name__


def _operands(values: Any, out: list[Any]) -> list[Any]:
    """The arrays, NumPy scalars and numbers among `values`, looking into lists and tuples."""
    for v in values:
        if isinstance(v, (list, tuple)):
            _operands(v, out)
        elif isinstance(v, (reverse.Tracked, np.ndarray, np.generic, float, int, complex)) and not isinstance(v, bool):
            out.append(v)
    return out


def _rewrap(result: Any) -> Any:
    """Makes every Tracked in the result an observed array (in place: the same object)."""
    if type(result) is reverse.Tracked:
        result.__class__ = _Observed
    elif isinstance(result, (tuple, list)):
        for r in result:
            _rewrap(r)
    return result


def _results(result: Any, out: list[Any]) -> list[Any]:
    if isinstance(result, (tuple, list)):
        for r in result:
            _results(r, out)
    elif isinstance(result, (reverse.Tracked, np.ndarray, np.generic)):
        out.append(result)
    return out


def _observe(session: _Session, symbol: str, operands: list[Any], result: Any, frame: Any) -> None:
    """Applies the rules of the opt half to one operation that user code called."""
    session.operations += 1
    outs = _results(result, [])
    tracked_in = [x.dtype for x in operands if isinstance(x, reverse.Tracked)]
    din = ", ".join(_describe(x) for x in operands)
    objects = [x for x in operands + outs if isinstance(x, (np.ndarray, np.generic)) and x.dtype == object]
    if objects:
        session.add("object_dtype", symbol, din, ", ".join(_describe(x) for x in outs), frame)
        return
    bound = max([session.reference.itemsize if session.reference is not None else 0]
                + [d.itemsize for d in tracked_in])
    for y in outs:
        dt = y.dtype
        if np.issubdtype(dt, np.floating) and dt.itemsize > bound:
            session.add("type_instability", symbol, din, str(dt), frame)
            break


def _user_line(frame: Any, runner: types.CodeType | None) -> tuple[str | None, str]:
    """``file:line`` and text of the innermost frame of f's call tree outside gradtest and NumPy
    (f's outermost frame when all of it is inside them)."""
    region = []
    f = frame
    while f is not None and f.f_code is not runner:
        region.append(f)
        f = f.f_back
    # f is None when the operation did not run under the check's runner (another thread): then
    # only frames outside gradtest and NumPy qualify
    chosen = next((fr for fr in region if not _internal(fr.f_code.co_filename)), None)
    if chosen is None and f is not None and region:
        chosen = region[-1]
    if chosen is None:
        return None, ""
    return _where(chosen.f_code.co_filename, chosen.f_lineno)


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith((_GRADTEST_DIR, _NUMPY_DIR))


def _where(filename: str, lineno: int | None) -> tuple[str, str]:
    line = linecache.getline(filename, lineno or 0).strip() if lineno else ""
    return f"{filename}:{lineno}", line


def _func_symbol(func: Any) -> str:
    module = getattr(func, "__module__", "") or ""
    prefix = "linalg." if "linalg" in module else ""
    return prefix + getattr(func, "__name__", repr(func))


class _Observed(reverse.Tracked):
    """A Tracked array whose NumPy hooks report the operations user code applies to it.

    Operations called from gradtest's own implementation of an operation (depth > 0) run as on a
    plain Tracked. Every Tracked result is turned into an _Observed one so that the observation
    follows the values through ``f``.
    """

    __slots__ = ()

    def _run(self, symbol: str, operands: list[Any], call: Callable[[], Any]) -> Any:
        session = _session_of(self)
        if session is None or session.depth:
            return _rewrap(call()) if session is not None else call()
        session.depth += 1
        try:
            result = call()
        finally:
            session.depth -= 1
        _rewrap(result)
        _observe(session, symbol, operands, result, sys._getframe(2))
        return result

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        symbol = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        return self._run(symbol, _operands(inputs, []),
                         lambda: reverse.Tracked.__array_ufunc__(self, ufunc, method, *inputs, **kwargs))

    def __array_function__(self, func: Callable, types: Any, args: Any, kwargs: Any) -> Any:
        return self._run(_func_symbol(func), _operands(list(args) + list(kwargs.values()), []),
                         lambda: reverse.Tracked.__array_function__(self, func, types, args, kwargs))

    def __getitem__(self, key: Any) -> Any:
        return self._run("getitem", [self], lambda: reverse.Tracked.__getitem__(self, key))

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        target = np.dtype(dtype)
        if np.issubdtype(target, np.floating) and target not in _TRACKED_DTYPES:
            self._dropped("astype")
        return self._run("astype", [self], lambda: reverse.Tracked.astype(self, dtype, copy))

    def _dropped(self, symbol: str) -> None:
        session = _session_of(self)
        if session is not None and not session.depth:
            session.add("dropped_tracking", symbol, str(self.dtype), "", sys._getframe(2))

    def __float__(self) -> float:
        # recorded as a finding; the conversion itself goes on (a plain Tracked refuses it)
        self._dropped("float")
        return float(self.value)

    def item(self, *args: Any) -> Any:
        self._dropped("item")
        return self.value.item(*args)

    def tolist(self) -> Any:
        self._dropped("tolist")
        return self.value.tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        # a plain Tracked has no __array__ (NumPy then fails reading it as a nested sequence); this
        # one names the problem and the line
        self._dropped("asarray")
        raise TypeError(
            "a tracked array cannot be converted to a plain ndarray (np.asarray/np.array on it would "
            "drop the tape); apply NumPy functions to it directly"
        )


# ---------------------------------------------------------------------------------------------
# the check

def callable_name(f: Any) -> str:
    """The qualified name of a function, method or callable object, for messages."""
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__


def _file_of(f: Any) -> tuple[str, int | None]:
    # functions and bound methods carry __code__; a callable object's is on its class's __call__
    code = getattr(f, "__code__", None) or getattr(getattr(type(f), "__call__", None), "__code__", None)
    if code is None:
        return "<python>", None
    return code.co_filename, code.co_firstlineno


def _is_floating(v: Any) -> bool:
    if isinstance(v, (np.ndarray, np.generic)):
        return np.issubdtype(v.dtype, np.floating)
    return isinstance(v, float)


def _returned(out: Any) -> str:
    if isinstance(out, reverse.Tracked):
        return f"a tracked {out.dtype} array of shape {out.shape}"
    if isinstance(out, (np.ndarray, np.generic)):
        return f"an untracked {out.dtype} {type(out).__name__} of shape {np.shape(out)}"
    return f"a {type(out).__name__}"


def _call_finding(exc: BaseException, runner: types.CodeType) -> PythonDispatchFinding:
    """The call half's finding for an exception, located by its traceback."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    # the frames below the runner (f's call tree), innermost first; empty when calling f itself
    # failed (e.g. a wrong number of arguments)
    below = next((i + 1 for i, fr in enumerate(frames) if fr[0] is runner), 0)
    region = frames[below:][::-1]
    chosen = next((fr for fr in region if not _internal(fr[0].co_filename)), region[-1] if region else None)
    source, code = _where(chosen[0].co_filename, chosen[1]) if chosen else (None, "")
    raised_inside = bool(region) and _internal(region[0][0].co_filename)
    message = str(exc)
    if isinstance(exc, NotImplementedError) and raised_inside:
        m = re.search(r"numpy\.([\w.]+)", message)
        return PythonDispatchFinding(
            kind="unsupported", symbol=m.group(1) if m else type(exc).__name__, source=source, code=code,
            dtype_in="", dtype_out="", fails=True, message=message,
            reason="gradtest's tracked arrays do not support it (NotImplementedError)",
        )
    return PythonDispatchFinding(
        kind="exception", symbol=type(exc).__name__, source=source, code=code, dtype_in="", dtype_out="",
        fails=True, message=message, reason=f"f raised {type(exc).__name__} on tracked arrays",
    )


def check_dispatch_python(f: Callable[..., Any], args: tuple[Any, ...], allow: tuple[str, ...],
                          call_broken: bool, opt_broken: bool) -> PythonDispatchReport:
    """The dispatch check of a Python callable; :func:`gradtest.check_dispatch` validates the
    options and calls this.

    Parameters
    ----------
    f : callable
        The NumPy function.
    args : tuple
        Its positional arguments; floating NumPy arrays (inside any tree) become tracked arrays,
        everything else is passed unchanged. The caller's arrays are not modified (the tracked
        leaves hold copies).
    allow : tuple of str
        fnmatch patterns matched against each opt finding's symbol, kind and ``file.py:LINE``.
    call_broken, opt_broken : bool
        Mark a half as expected to fail.

    Returns
    -------
    PythonDispatchReport
    """
    file, _ = _file_of(f)
    flat = flatten_args(tuple(args))
    refuse_subclasses(flat)
    tape = reverse.Tape()
    tape.observed = True  # every operation through the Python hooks (the C fast path wraps plain Tracked)
    try:
        leaves = [_Observed.leaf(tape, flat.leaves[i]) for i in flat.differentiable]
        reference = max((x.dtype for x in leaves), key=lambda d: d.itemsize) if leaves else None
        session = _Session(reference)
        report = PythonDispatchReport(target=callable_name(f), library=file, outcomes={},
                                      reference_dtype=str(reference) if reference is not None else "")
        call_args = flat.call_args(dict(zip(flat.differentiable, leaves)))

        def run() -> Any:
            return f(*call_args)

        session.runner = run.__code__
        _SESSIONS[id(tape)] = session
        t0 = time.perf_counter()
        error: BaseException | None = None
        out: Any = None
        try:
            out = run()
        except Exception as exc:  # the call half reports it
            error = exc
        finally:
            _SESSIONS.pop(id(tape), None)
        report.seconds = time.perf_counter() - t0
        report.operations = session.operations

        # the call half
        if error is None:
            report.result = tree_map_outputs(lambda x: x.value if isinstance(x, reverse.Tracked) else x, out)
            report.outcomes["call"] = Outcome("call", half_status(False, call_broken), seconds=report.seconds,
                                              message=f"f ran on tracked arrays and returned {_returned(out)}")
        else:
            finding = _call_finding(error, session.runner)
            report.findings.append(finding)
            where = f" at {finding.location}" if finding.source else ""
            report.outcomes["call"] = Outcome(
                "call", half_status(True, call_broken), exception=error, seconds=report.seconds,
                message=f"f raised {type(error).__name__}{where}: {error}",
            )
            report.notes.append("f raised: the opt half saw only the operations before the exception")

        # the opt half
        entries = [list(e) for e in session.found.values()]
        if error is None and leaves and not any(e[0] == "dropped_tracking" for e in entries):
            try:
                plain = [v for v in output_leaves(out) if not isinstance(v, reverse.Tracked) and _is_floating(v)]
            except Exception:  # an output optree cannot flatten: nothing to say about it
                plain = []
            if plain:
                src_file, first = _file_of(f)
                source, code = _where(src_file, first) if first else (None, "")
                entries.append(["untracked_output", "output", source, code, "",
                                ", ".join(_describe(v) for v in plain), 1])
        opt_findings = []
        for kind, symbol, source, code, din, dout, count in entries:
            loc = ""
            if source:
                path, _, line = source.rpartition(":")
                loc = f"{os.path.basename(path)}:{line}"
            allowed_by = matches(symbol, allow) or matches(kind, allow) or matches(loc, allow)
            if allowed_by:
                fails, reason = False, f"allowed by allow={allowed_by!r}"
            else:
                fails = True
                reason = {
                    "type_instability": f"widens {reference} to {dout}",
                    "object_dtype": "object dtype",
                    "dropped_tracking": "the value leaves the tape (its derivative is lost)",
                    "untracked_output": "the output does not depend on the tracked inputs",
                }[kind]
            opt_findings.append(PythonDispatchFinding(kind, symbol, source, code, din, dout, fails, reason, count))
        report.findings.extend(opt_findings)
        if not leaves:
            report.outcomes["opt"] = Outcome("opt", "skipped",
                                             message="no floating-point array argument: nothing was tracked")
        else:
            failed, msg = opt_verdict(opt_findings,
                                      f"type-stable in {reference}: {session.operations} operation(s) observed")
            report.outcomes["opt"] = Outcome("opt", half_status(failed, opt_broken), message=msg,
                                             seconds=report.seconds)
    finally:
        tape.release()
    return report
