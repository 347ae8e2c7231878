"""The reports of the dispatch checks: findings, the report of a C target and the report of a
Python target (which renders through the same table), and the verdict rules the two checks share.

A leaf of the dispatch package: the native and the Python-target checks both build on it.
"""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Sequence
from typing import Any

from ..report import FAILING, STATUS_COLORS, Outcome

#: kinds of findings of the opt half, then of the call half
OPT_KINDS = ("type_instability", "object_dtype", "dropped_tracking", "untracked_output")
CALL_KINDS = ("unsupported", "exception")


def half_status(failed: bool, broken: bool) -> str:
    """The status of one half (call or opt): ``broken``/``unexpected_pass`` when it was marked
    broken, else ``fail``/``pass``."""
    if broken:
        return "broken" if failed else "unexpected_pass"
    return "fail" if failed else "pass"


def opt_verdict(findings: Sequence[Any], clean: str) -> tuple[bool, str]:
    """Whether the opt half's findings fail it, and its message; `clean` says what passed."""
    failing = [f for f in findings if f.fails]
    if failing:
        kinds = sorted({f.kind for f in failing})
        return True, f"{len(failing)} finding(s) fail the check: {', '.join(kinds)}"
    if findings:
        clean += f" ({len(findings)} allowed finding(s) listed)"
    return False, clean


@dataclasses.dataclass
class DispatchFinding:
    """One thing the dispatch checks found.

    Attributes
    ----------
    kind : str
        ``indirect_call`` (a call or jump through a pointer: dynamic dispatch), ``python_api``,
        ``allocation``, ``external_call``, ``unresolved`` (control flow the analysis could not
        follow) or ``crash`` (the call check).
    symbol : str
        Where: ``function+0xoffset`` in the object holding the instruction.
    address : int
        The instruction's virtual address in that object's file (0 for ``crash``).
    chain : tuple of str
        The functions from the target down to the one holding the instruction.
    library : str or None
        The library that provides the callee at run time (external calls), else ``None``.
    module : str
        The object file holding the instruction.
    callee : str or None
        The called function's name, for calls by name.
    instruction : str
        The instruction, e.g. ``call qword ptr [rax + 8]``, or the crash's description.
    fails : bool
        Whether it fails its half of the check (with ``call_broken``/``opt_broken`` the half is
        then reported as ``broken``, the expected failure).
    reason : str
        Why it fails or not (e.g. ``allowed by default (libm)``, ``on an error path``).
    error_path : bool
        On a path that ends in a noreturn call.
    source : str or None
        ``file:line`` of the instruction when the object carries DWARF line information
        (built with ``-g``), else ``None``.
    """

    kind: str
    symbol: str
    address: int
    chain: tuple[str, ...]
    library: str | None
    module: str
    callee: str | None
    instruction: str
    fails: bool
    reason: str
    error_path: bool = False
    source: str | None = None

    @property
    def what(self) -> str:
        """A short description: the callee (with its library) or the instruction."""
        if self.kind == "crash":
            return self.instruction
        if self.callee:
            lib = f" ({os.path.basename(self.library)})" if self.library else ""
            return f"{self.callee}{lib}"
        return self.instruction

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON-friendly data."""
        d = dataclasses.asdict(self)
        d["chain"] = list(self.chain)
        return d


@dataclasses.dataclass
class DispatchReport:
    """The result of :func:`check_dispatch`.

    Attributes
    ----------
    target : str
        The checked function's name.
    library : str
        The object file holding it.
    outcomes : dict
        ``{"call": Outcome, "opt": Outcome}`` (:class:`gradtest.Outcome`; ``.status`` is one of
        pass/fail/broken/unexpected_pass/skipped/error, ``.message`` says why).
    findings : list of DispatchFinding
        Everything found, failing or not, in the order found (breadth first from the target).
    modules : list of str
        The target modules whose code was followed.
    functions : list of str
        The functions analysed (each once).
    instructions, jump_tables, plt_calls : int
        Decoded instructions, switch jump tables recognised, calls resolved through PLT/GOT.
    seconds : float
        Time of the analysis.
    result : object
        The call's return value when it returned, else ``None``.
    notes : list of str
        Remarks (e.g. the analysis was static because the library could not be loaded).
    """

    target: str
    library: str
    outcomes: dict[str, Outcome]
    findings: list[DispatchFinding] = dataclasses.field(default_factory=list)
    modules: list[str] = dataclasses.field(default_factory=list)
    functions: list[str] = dataclasses.field(default_factory=list)
    instructions: int = 0
    jump_tables: int = 0
    plt_calls: int = 0
    seconds: float = 0.0
    result: Any = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when neither half failed, errored or passed unexpectedly."""
        return not any(o.status in FAILING for o in self.outcomes.values())

    @property
    def failures(self) -> list[DispatchFinding]:
        """The findings that fail the check."""
        return [f for f in self.findings if f.fails]

    def _header(self) -> str:
        return (
            f"gradtest dispatch: {self.target} in {os.path.basename(self.library)} — {len(self.functions)} "
            f"function(s), {self.instructions} instructions, {self.jump_tables} jump table(s), "
            f"{self.plt_calls} PLT/GOT call(s), {self.seconds * 1e3:.1f} ms"
        )

    # the findings table: five fixed columns, then one that differs between C and Python targets
    _LAST_COLUMN = "chain"

    def _finding_rows(self) -> list[list[str]]:
        return [
            ["FAIL" if f.fails else "ok", f.kind, f.what,
             f.symbol + (f" ({os.path.basename(f.source.rsplit(':', 1)[0])}:{f.source.rsplit(':', 1)[1]})"
                         if f.source else ""),
             f.reason, " -> ".join(f.chain)]
            for f in self.findings
        ]

    def _last_cell_html(self, text: str) -> str:
        return html.escape(text)

    def __str__(self) -> str:
        lines = [self._header()]
        for name, o in self.outcomes.items():
            lines.append(f"  {name:<5} {o.status:<15} {o.message}".rstrip())
        rows = self._finding_rows()
        if rows:
            lines.append("  findings:")
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                cells = "  ".join(c.ljust(w) for c, w in zip(r[:5], widths))
                lines.append(f"    {cells}  {self._LAST_COLUMN}: {r[5]}".rstrip())
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  result: " + ("PASSED" if self.passed else "FAILED"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        outs = "".join(
            f"<tr><td>{html.escape(n)}</td><td style='color:{STATUS_COLORS.get(o.status, '#000')};font-weight:bold'>"
            f"{html.escape(o.status)}</td><td>{html.escape(o.message)}</td></tr>"
            for n, o in self.outcomes.items()
        )
        head = "".join(f"<th>{c}</th>" for c in ("", "kind", "what", "where", "why", self._LAST_COLUMN))
        body = "".join(
            "<tr>" + "".join(
                f"<td style='color:{'#cf222e' if i == 0 and r[0] == 'FAIL' else '#000'}'>"
                + (self._last_cell_html(c) if i == 5 else html.escape(c)) + "</td>"
                for i, c in enumerate(r)
            ) + "</tr>"
            for r in self._finding_rows()
        )
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if body else ""
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"<div><p>{html.escape(self._header())}</p><table><tbody>{outs}</tbody></table>{table}"
            f"<ul>{notes}</ul><p><b>{verdict}</b></p></div>"
        )

    def __repr__(self) -> str:
        statuses = ", ".join(f"{k}={o.status}" for k, o in self.outcomes.items())
        return f"<{type(self).__name__} {self.target}: {statuses}, {len(self.failures)} failing finding(s)>"

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {
            "target": self.target,
            "library": self.library,
            "passed": self.passed,
            "outcomes": {k: {"status": o.status, "message": o.message} for k, o in self.outcomes.items()},
            "findings": [f.as_dict() for f in self.findings],
            "modules": list(self.modules),
            "functions": list(self.functions),
            "instructions": self.instructions,
            "jump_tables": self.jump_tables,
            "plt_calls": self.plt_calls,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }


@dataclasses.dataclass
class PythonDispatchFinding:
    """One thing the dispatch check of a Python function found.

    Attributes
    ----------
    kind : str
        ``type_instability``, ``object_dtype``, ``dropped_tracking`` or ``untracked_output`` (the
        opt half); ``unsupported`` or ``exception`` (the call half).
    symbol : str
        The NumPy function or ufunc (``multiply``, ``sum``, ``add.reduce``, ``linalg.norm``), the
        method or conversion (``astype``, ``float``, ``item``, ``asarray``), ``output``, or the
        exception's type for ``exception``.
    source : str or None
        ``path/file.py:LINE`` of the line in the user's code that did it.
    code : str
        That line's text, stripped.
    dtype_in : str
        The operands' dtypes, comma-separated (Python scalars by their type: ``float``).
    dtype_out : str
        The result's dtype (empty for call findings).
    fails : bool
        Whether it fails its half (a call finding always does; an allowed opt finding does not).
    reason : str
        Why it fails or not.
    count : int
        How many times this operation ran at that line with these dtypes.
    message : str
        The exception's message (call findings).
    """

    kind: str
    symbol: str
    source: str | None
    code: str
    dtype_in: str
    dtype_out: str
    fails: bool
    reason: str
    count: int = 1
    message: str = ""

    @property
    def what(self) -> str:
        """A short description: the symbol with its dtypes, or the exception."""
        if self.kind in CALL_KINDS:
            return f"{self.symbol}: {self.message}" if self.message else self.symbol
        if self.dtype_in and self.dtype_out:
            return f"{self.symbol} ({self.dtype_in} -> {self.dtype_out})"
        if self.dtype_in or self.dtype_out:
            return f"{self.symbol} ({self.dtype_in or self.dtype_out})"
        return self.symbol

    @property
    def location(self) -> str:
        """``file.py:LINE`` (the file's base name), or an empty string."""
        if not self.source:
            return ""
        path, _, line = self.source.rpartition(":")
        return f"{os.path.basename(path)}:{line}"

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON-friendly data."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(repr=False)
class PythonDispatchReport(DispatchReport):
    """The result of :func:`gradtest.check_dispatch` for a Python function.

    A :class:`~gradtest.DispatchReport` (``passed``, ``failures``, ``outcomes["call"]``
    and ``["opt"]``) whose ``findings`` are :class:`PythonDispatchFinding` records; ``target`` is
    the function's qualified name, ``library`` its source file, ``result`` its output with plain
    NumPy values (``None`` when it raised).

    Attributes
    ----------
    reference_dtype : str
        The widest floating dtype among the tracked inputs (empty when there were none).
    operations : int
        The NumPy operations observed on tracked arrays.
    """

    reference_dtype: str = ""
    operations: int = 0

    def _header(self) -> str:
        ref = f"reference dtype {self.reference_dtype}" if self.reference_dtype else "no tracked input"
        return (
            f"gradtest dispatch: {self.target} (Python, {os.path.basename(self.library)}) — {ref}, "
            f"{self.operations} operation(s) on tracked arrays, {self.seconds * 1e3:.1f} ms"
        )

    def _finding_rows(self) -> list[list[str]]:
        return [
            ["FAIL" if f.fails else "ok", f.kind, f.what, f.location, f.reason,
             f.code + (f"  (x{f.count})" if f.count > 1 else "")]
            for f in self.findings
        ]

    _LAST_COLUMN = "code"

    def _last_cell_html(self, text: str) -> str:
        return f"<code>{html.escape(text)}</code>"

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {
            "target": self.target,
            "library": self.library,
            "language": "python",
            "passed": self.passed,
            "outcomes": {k: {"status": o.status, "message": o.message} for k, o in self.outcomes.items()},
            "findings": [f.as_dict() for f in self.findings],
            "reference_dtype": self.reference_dtype,
            "operations": self.operations,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }
