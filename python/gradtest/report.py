"""Reports: one outcome per backend, readable as a table, as HTML in notebooks, and as data."""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import numpy as np

STATUSES = ("pass", "fail", "broken", "unexpected_pass", "skipped", "error")
#: statuses that make a check fail
FAILING = ("fail", "unexpected_pass", "error")
#: how the HTML reports colour each status
STATUS_COLORS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#cf222e", "unexpected_pass": "#cf222e",
                 "broken": "#9a6700", "skipped": "#6e7781"}


@dataclasses.dataclass
class WorstElement:
    """The element that violated its tolerance the most (or, when all passed, erred the most).

    Attributes
    ----------
    path : str
        The argument it belongs to, e.g. ``args[1]['x']['z']``; in directional mode ``direction``.
    index : tuple of int
        Its index within that array (the direction number in directional mode).
    expected : float
        The ground truth.
    got : float
        The backend's value.
    tolerance : float
        The tolerance that applied to it.
    dominant : str
        Which term of that tolerance was the largest (e.g. "the finite-difference error bound").
    """

    path: str
    index: tuple[int, ...]
    expected: float
    got: float
    tolerance: float
    dominant: str = ""

    @property
    def name(self) -> str:
        """The element as an expression, e.g. ``args[1]['t'][3]``."""
        return self.path + (f"[{', '.join(map(str, self.index))}]" if self.index else "")


@dataclasses.dataclass
class Outcome:
    """What happened to one backend.

    Attributes
    ----------
    backend : str
        The backend's name.
    status : {'pass', 'fail', 'broken', 'unexpected_pass', 'skipped', 'error'}
        ``broken`` is an expected failure (``broken_backends`` or ``soft_fail``);
        ``unexpected_pass`` a backend marked broken that passed.
    max_abs_err, max_rel_err : float
        Largest absolute and relative deviation from the ground truth (NaN when not compared).
    worst : WorstElement or None
        The worst element.
    atol, rtol : float
        The tolerances used (``atol`` per leaf may differ; this is the largest).
    exception : BaseException or None
        What the backend raised, for ``error`` (and ``broken`` after an error).
    message : str
        One line explaining the status.
    seconds : float
        Time the backend took.
    n_failed, n_compared : int
        Elements (directions, in directional mode) out of tolerance, and compared.
    notes : list of str
        Remarks about this backend's comparison (kinks at which its value was accepted).
    """

    backend: str
    status: str
    max_abs_err: float = math.nan
    max_rel_err: float = math.nan
    worst: WorstElement | None = None
    atol: float = math.nan
    rtol: float = math.nan
    exception: BaseException | None = None
    message: str = ""
    seconds: float = 0.0
    n_failed: int = 0
    n_compared: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when this outcome makes the check fail."""
        return self.status in FAILING


@dataclasses.dataclass
class GradientReport:
    """The result of :func:`gradtest.check_gradients`.

    Attributes
    ----------
    function_name : str
        The checked function's name.
    outcomes : dict of str to Outcome
        One per backend, in the order they ran.
    ground_truth : tuple or None
        The ground-truth gradient tree (``None`` for non-differentiated leaves), in full mode.
    mode : str
        ``'full'`` or ``'directional'``.
    method : str
        The finite-difference formula, e.g. ``'central adaptive'``.
    n_elements : int
        Differentiated elements.
    evaluations : int
        Calls of f for the ground truth.
    seconds : float
        Time of the ground truth.
    notes : list of str
        Warnings and remarks (e.g. f mutated its inputs).
    ground_truth_error : Exception or None
        Why there is no ground truth (f raised, returned non-finite values...), else None. Then
        every backend is an ``error``, whatever ``soft_fail`` or ``broken_backends`` say.
    """

    function_name: str
    outcomes: dict[str, Outcome]
    ground_truth: Any = None
    mode: str = "full"
    method: str = ""
    n_elements: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    ground_truth_error: Exception | None = None

    @property
    def passed(self) -> bool:
        """True when no backend failed, errored or passed unexpectedly, and at least one ran."""
        return bool(self.outcomes) and not any(o.failed for o in self.outcomes.values())

    @property
    def failures(self) -> list[Outcome]:
        """The outcomes that make the check fail."""
        return [o for o in self.outcomes.values() if o.failed]

    def _header(self) -> str:
        head = f"gradtest: {self.function_name} — {self.n_elements} differentiated element(s); "
        if not self.evaluations and self.mode == "none":
            return head + "no ground truth (see the notes)"
        return head + (
            f"ground truth: finite differences ({self.method}, {self.mode} mode, "
            f"{self.evaluations} evaluations, {_fmt_time(self.seconds)})"
        )

    def suggestion(self) -> str:
        """The next step, when the outcomes make it clear (empty otherwise)."""
        status = {name: o.status for name, o in self.outcomes.items()}
        engines = [n for n in ("forward", "reverse") if status.get(n) == "pass"]
        if status.get("user") == "fail" and engines:
            return (f"{' and '.join(engines)} {'agree' if len(engines) > 1 else 'agrees'} with finite "
                    "differences: the hand-written gradient is the odd one out")
        failing = [n for n, s in status.items() if s == "fail"]
        if len(failing) > 1 and not any(s == "pass" for s in status.values()):
            return ("every backend disagrees with finite differences: check f itself near x "
                    "(a kink, a discontinuity, or code the backends see differently)")
        return ""

    def _rows(self) -> list[list[str]]:
        rows = []
        for o in self.outcomes.values():
            w = o.worst
            rows.append([
                o.backend,
                o.status,
                f"{o.n_failed}/{o.n_compared}" if o.n_compared else "",
                _fmt(o.max_abs_err),
                _fmt(o.max_rel_err),
                w.name if w else "",
                _fmt(w.expected) if w else "",
                _fmt(w.got) if w else "",
                _fmt(w.tolerance) if w else "",
            ])
        return rows

    _COLUMNS = ["backend", "status", "failed", "max abs err", "max rel err", "worst element", "expected", "got", "tolerance"]

    def __str__(self) -> str:
        rows = [self._COLUMNS] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._COLUMNS))]
        lines = [self._header()]
        for j, row in enumerate(rows):
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if j == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        for o in self.outcomes.values():
            if o.message and o.status != "pass":
                lines.append(f"  {o.backend}: {o.message}")
            lines += [f"  {o.backend}: {note}" for note in o.notes]
        lines += [f"  note: {note}" for note in self.notes]
        if self.suggestion():
            lines.append(f"  suggestion: {self.suggestion()}")
        lines.append("  result: " + ("PASSED" if self.passed else "FAILED"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self._COLUMNS)
        body = []
        for o, row in zip(self.outcomes.values(), self._rows()):
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
            cells = cells.replace(
                f"<td>{html.escape(o.status)}</td>",
                f"<td style='color:{STATUS_COLORS.get(o.status, '#000')};font-weight:bold'>{html.escape(o.status)}</td>",
                1,
            )
            body.append(f"<tr title='{html.escape(o.message)}'>{cells}</tr>")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        messages = "".join(
            f"<li><b>{html.escape(o.backend)}</b>: {html.escape(o.message)}</li>"
            for o in self.outcomes.values() if o.message and o.status != "pass"
        ) + "".join(
            f"<li><b>{html.escape(o.backend)}</b>: {html.escape(note)}</li>"
            for o in self.outcomes.values() for note in o.notes
        )
        if self.suggestion():
            messages += f"<li>suggestion: {html.escape(self.suggestion())}</li>"
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"<div><p>{html.escape(self._header())}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<ul>{messages}{notes}</ul><p><b>{verdict}</b></p></div>"
        )

    def __repr__(self) -> str:
        statuses = ", ".join(f"{k}={v.status}" for k, v in self.outcomes.items())
        return f"<GradientReport {self.function_name}: {statuses or 'no backends'}>"


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
