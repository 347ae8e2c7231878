"""One gradient check in three steps: parse, run, judge.

- :func:`parse` validates the arguments of :func:`gradtest.check_gradients` into a
  :class:`CheckPlan`: which backends are asked for, skipped, broken or soft, the tolerances and
  the options. Nothing is evaluated.
- :func:`run` carries the plan out: the ground truth, then each backend's result. Results come
  from a producer: the Python producer calls f and the registered backends; a target that checks
  itself (a :class:`gradtest.CKernel`, through ``__gradtest_check__``) is another producer of the
  same results.
- :func:`judge` compares each result with the ground truth, applies LuxTestUtils' semantics and
  builds the report; :func:`add_second_order` does the same for Hessian-vector products.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import _isolate
from ._compare import GradientShapeError, as_gradient_arrays, compare_directional, compare_full
from ._finite_diff import FDOptions, GroundTruth, GroundTruthError, describe_exception, ground_truth
from ._names import string_list as _names
from ._names import unknown_backend
from ._problem import DirectionalDerivatives, GradientProblem, describe_output
from ._tree import FlatArgs, flatten_args, refuse_subclasses
from .backends import (BackendNotApplicable, available_backends, device_leaf_note, get_backend, not_run_note,
                       not_run_reason)
from .ckernel import KernelCrash
from .report import GradientReport, Outcome

GROUND_TRUTH_BACKEND = "finite_diff"


class NoBackendWarning(UserWarning):
    """No backend was left to test after skips and filters: nothing was checked."""


@dataclasses.dataclass
class CheckSettings:
    """The parsed options of one check, handed to objects that run their own check (such as
    :class:`gradtest.CKernel`, through their ``__gradtest_check__`` method).

    Attributes
    ----------
    fd_options : dict
        Finite-difference options (see :class:`gradtest._finite_diff.FDOptions`).
    ground_truth_dtype : numpy.dtype
        The dtype of the ground truth.
    extra : dict
        Keyword arguments that are not finite-difference options, for the object to interpret.
    """

    fd_options: dict[str, Any]
    ground_truth_dtype: np.dtype
    extra: dict[str, Any]


@dataclasses.dataclass
class CheckPlan:
    """What one check will do, decided from its arguments alone.

    Attributes
    ----------
    f : callable
        The function (or target) under test.
    args : tuple
        Its positional arguments, as given.
    flat : FlatArgs
        The flattened arguments.
    kwargs : dict
        Keyword arguments for f.
    requested : list of str or None
        ``backends=``; None selects the default backends once f's output is known.
    skip, broken, soft : list of str
        ``skip_backends``, ``broken_backends`` and the names in ``soft_fail``.
    soft_all : bool
        ``soft_fail=True``.
    atol, rtol : float or None
        Tolerance overrides.
    nans : bool
        Whether a NaN in the same element of the ground truth and a gradient is a match.
    ground_truth_backend : str
        The reference.
    ground_truth_dtype : numpy.dtype
        The dtype of the finite differences.
    order : int
        1, or 2 for Hessian-vector products too.
    fd : FDOptions
        Finite-difference options.
    backend_options : dict
        Options named after a backend.
    gradient : callable or None
        The hand-written gradient.
    target : callable or None
        ``f.__gradtest_check__`` for a target that computes its own results.
    settings : CheckSettings or None
        What the target gets.
    isolate : bool
        Run the check of a Python f in a forked child (:mod:`gradtest._isolate`).
    timeout : float or None
        Seconds an isolated run may take.
    """

    f: Callable[..., Any]
    args: tuple[Any, ...]
    flat: FlatArgs
    kwargs: dict[str, Any]
    requested: list[str] | None
    skip: list[str]
    broken: list[str]
    soft: list[str]
    soft_all: bool
    atol: float | None
    rtol: float | None
    nans: bool
    ground_truth_backend: str
    ground_truth_dtype: np.dtype
    order: int
    fd: FDOptions
    backend_options: dict[str, Any]
    gradient: Callable[..., Any] | None
    target: Callable[..., Any] | None = None
    settings: CheckSettings | None = None
    isolate: bool = False
    timeout: float | None = None

    def is_broken(self, *names: str) -> bool:
        return any(n in self.broken for n in names)

    def is_soft(self, *names: str) -> bool:
        return self.soft_all or any(n in self.soft for n in names)


class MissingDerivative(LookupError):
    """A target was asked for a backend it does not provide."""


@dataclasses.dataclass
class BackendResult:
    """One backend's gradient (one array per differentiated leaf), or what it raised."""

    grads: Sequence[Any] | None = None
    error: BaseException | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class CheckRun:
    """What running a plan produced."""

    problem: GradientProblem
    selected: list[str]
    gt: GroundTruth | None
    gt_error: BaseException | None
    results: dict[str, BackendResult]


# ---- parse -----------------------------------------------------------------------------------

def _check_known(names: Sequence[str], known: Sequence[str], argument: str) -> None:
    for name in names:
        if name not in known:
            raise ValueError(f"{argument}: {unknown_backend(name, known)}")


def _tolerance(value: float | None, argument: str) -> float | None:
    if value is None:
        return None
    # float("1e-3") and float(True) would pass: a tolerance is a real number, nothing else
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argument}: expected a real number >= 0, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (value >= 0) or not np.isfinite(value):
        raise ValueError(f"{argument}: expected a finite number >= 0, got {value!r}")
    return value


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separates finite-difference options from backend options, which are named after their
    backend (``forward_chunk_size`` for ``"forward"``). Anything else is left with the
    finite-difference options, whose validation names it."""
    backend_options = {
        key: value for key, value in options.items()
        if any(key.startswith(name + "_") for name in available_backends())
    }
    return {k: v for k, v in options.items() if k not in backend_options}, backend_options


def _isolation(isolate: Any, timeout: Any) -> tuple[bool, float | None]:
    """``isolate=`` and ``timeout=`` of a Python f's check."""
    if not isinstance(isolate, (bool, np.bool_)):
        raise TypeError(f"isolate: expected True or False, got {type(isolate).__name__}")
    if isolate and not hasattr(os, "fork"):
        raise ValueError("isolate: needs os.fork, which this platform lacks (POSIX systems have it)")
    if timeout is not None:
        if not isolate:
            raise ValueError("timeout: needs isolate=True (a check running in this process cannot be stopped)")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)) \
                or not (0 < timeout < math.inf):
            raise ValueError(f"timeout: expected a number of seconds > 0, got {timeout!r}")
        timeout = float(timeout)
    return bool(isolate), timeout


def _ground_truth_dtype(value: Any, flat: FlatArgs) -> np.dtype:
    """``ground_truth_dtype``: None means the inputs' own dtype (LuxTestUtils'
    ``ground_truth_eltype = nothing``): that of the differentiated leaves, promoted if they
    differ, and float32 for float16 (the narrowest type the finite differences run in)."""
    if value is not None:
        return np.dtype(value)
    own = np.result_type(*(np.asarray(flat.leaves[i]).dtype for i in flat.differentiable))
    return np.dtype(np.float32) if own == np.float16 else np.dtype(own)


def parse(
    f: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    backends: Sequence[str] | None,
    skip_backends: Iterable[str],
    broken_backends: Iterable[str],
    soft_fail: bool | Iterable[str],
    gradient: Callable[..., Any] | None,
    ground_truth_backend: str,
    ground_truth_dtype: Any,
    atol: float | None,
    rtol: float | None,
    nans: bool,
    kwargs: dict[str, Any] | None,
    order: int,
    fd_options: dict[str, Any],
) -> CheckPlan:
    """Validates the arguments of check_gradients into a plan (TypeError/ValueError naming the
    argument otherwise)."""
    target = getattr(f, "__gradtest_check__", None)
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    known = available_backends() + [n for n in getattr(f, "__gradtest_backends__", ()) if n not in available_backends()]
    if order == 2:
        known += [f"{n}:hvp" for n in available_backends() if get_backend(n).hvp is not None]
    requested = None if backends is None else _names(backends, "backends")
    skip = _names(skip_backends, "skip_backends")
    broken = _names(broken_backends, "broken_backends")
    soft = [] if isinstance(soft_fail, bool) else _names(soft_fail, "soft_fail")
    for names, argument in ((requested or [], "backends"), (skip, "skip_backends"), (broken, "broken_backends"),
                            (soft, "soft_fail"), ([ground_truth_backend], "ground_truth_backend")):
        _check_known(names, known, argument)
    both = sorted(set(skip) & set(broken))
    if both:
        raise ValueError(f"skip_backends and broken_backends both name {', '.join(map(repr, both))}; "
                         "a backend is either skipped or broken")
    atol, rtol = _tolerance(atol, "atol"), _tolerance(rtol, "rtol")
    if not isinstance(nans, (bool, np.bool_)):
        raise TypeError(f"nans: expected True or False, got {type(nans).__name__}")
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    if gradient is not None and not callable(gradient):
        raise TypeError(f"gradient: expected a callable returning the gradient tree, got {type(gradient).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"kwargs: expected a dict of keyword arguments for f, got {type(kwargs).__name__}")
    flat = flatten_args(args)
    refuse_subclasses(flat)
    if not flat.differentiable:
        kinds = ", ".join(f"{p}: {type(leaf).__name__}" for p, leaf in zip(flat.paths, flat.leaves)) or "no arguments"
        raise ValueError(
            "args: no differentiable argument; gradtest differentiates floating NumPy arrays, "
            f"torch tensors and JAX arrays (float16, float32, float64), got {kinds}"
        )
    gt_dtype = _ground_truth_dtype(ground_truth_dtype, flat)
    settings = None
    if target is not None:
        if order != 1:
            raise ValueError("order: C targets are checked at order 1 only")
        fd_names = {fld.name for fld in dataclasses.fields(FDOptions)}
        settings = CheckSettings({k: v for k, v in fd_options.items() if k in fd_names}, gt_dtype,
                                 {k: v for k, v in fd_options.items() if k not in fd_names})
        fd, backend_options = FDOptions.from_kwargs(settings.fd_options), {}
        isolate, timeout = False, None
    else:
        fd_kwargs, backend_options = _split_options(fd_options)
        isolate, timeout = _isolation(fd_kwargs.pop("isolate", False), fd_kwargs.pop("timeout", None))
        fd = FDOptions.from_kwargs(fd_kwargs)
    return CheckPlan(f, args, flat, kwargs or {}, requested, skip, broken, soft, soft_fail is True, atol, rtol,
                     bool(nans), ground_truth_backend, gt_dtype, order, fd, backend_options, gradient, target, settings,
                     isolate, timeout)


# ---- run -------------------------------------------------------------------------------------

def select_backends(problem: GradientProblem, requested: Sequence[str] | None, ground_truth_backend: str) -> list[str]:
    """The backends a check runs: ``requested``, or every default backend that applies (plus
    ``"user"`` when a gradient is given); never the ground truth's."""
    note = device_leaf_note(problem)
    if note is not None and note not in problem.notes:
        problem.notes.append(note)
    if requested is not None:
        if "user" in requested and problem.user_gradient is None:
            raise ValueError("backends: 'user' needs gradient= (a function returning the gradient tree)")
        return [b for b in requested if b != ground_truth_backend]
    selected = []
    not_run = []
    for name in available_backends():
        if name == ground_truth_backend:
            continue
        if name == "user":
            if problem.user_gradient is not None:
                selected.append(name)
            continue
        backend = get_backend(name)
        why = not_run_reason(backend, problem)
        if why is None:
            selected.append(name)
        elif backend.default:  # the report says why a default backend did not run
            not_run.append(backend)
    note = not_run_note(not_run, problem)
    if note is not None and not any("not run by default" in n for n in problem.notes):
        problem.notes.append(note)
    return selected


def _timed(compute: Callable[[], Sequence[Any]], stage: str | None = None) -> BackendResult:
    """``compute()``'s gradients or exception, and its time. ``stage``: the backend it is, which
    an isolated check announces to its parent, or answers with the crash an earlier child died
    of there."""
    if stage is not None:
        crash = _isolate.crash_of(stage)
        if crash is not None:
            return BackendResult(error=crash)
        _isolate.announce(f"backend {stage}")
    start = time.perf_counter()
    try:
        grads = compute()
    except Exception as exc:  # the backend's failure is its result, the run goes on
        return BackendResult(error=exc, seconds=time.perf_counter() - start)
    return BackendResult(grads=grads, seconds=time.perf_counter() - start)


def run(plan: CheckPlan) -> CheckRun:
    """The ground truth and every selected backend's result."""
    return _run_target(plan) if plan.target is not None else _run_python(plan)


def _run_python(plan: CheckPlan) -> CheckRun:
    problem = GradientProblem(plan.f, plan.kwargs, plan.flat, describe_output(0.0, np.random.default_rng(0)),
                              plan.gradient, plan.backend_options)
    gt_error: BaseException | None = None
    gt: GroundTruth | None = None
    try:
        out = plan.f(*problem.fresh_args(), **problem.kwargs)
        problem.output = describe_output(out, np.random.default_rng(plan.fd.seed))
        selected = select_backends(problem, plan.requested, plan.ground_truth_backend)
        _isolate.announce("the ground truth")
        if plan.ground_truth_backend == GROUND_TRUTH_BACKEND:
            gt = ground_truth(problem, plan.fd, plan.ground_truth_dtype)
        else:
            reference = _timed(lambda: get_backend(plan.ground_truth_backend).compute(problem))
            if reference.error is not None:
                raise reference.error
            grads = as_gradient_arrays(reference.grads, problem.diff_leaves, problem.diff_paths,
                                       plan.ground_truth_backend)
            gt = GroundTruth("full", [np.asarray(g, np.float64) for g in grads], [np.zeros(g.shape) for g in grads],
                             plan.ground_truth_backend, 0, reference.seconds, np.dtype(np.float64))
    except (GroundTruthError, GradientShapeError, TypeError, ValueError, ArithmeticError) as exc:
        gt_error = exc
        selected = select_backends(problem, plan.requested, plan.ground_truth_backend)
    except Exception as exc:  # f raised: reported as an error of every backend
        gt_error = GroundTruthError(f"f raised: {describe_exception(exc)}")
        gt_error.__cause__ = exc
        selected = select_backends(problem, plan.requested, plan.ground_truth_backend)
    results = {}
    if gt is not None:
        # a backend that differentiates along given directions computes only those (forward
        # mode: k passes instead of n / chunk)
        problem.directions = gt.directions
        for name in selected:
            if name not in plan.skip:
                results[name] = _timed(lambda name=name: get_backend(name).compute(problem), name)
    return CheckRun(problem, selected, gt, gt_error, results)


def _run_target(plan: CheckPlan) -> CheckRun:
    """A target computes the ground truth and its own backends' gradients (in C, say)."""
    assert plan.target is not None
    problem = GradientProblem(plan.f, plan.kwargs, plan.flat, describe_output(0.0, np.random.default_rng(0)))
    selected = plan.requested if plan.requested is not None else list(getattr(plan.f, "__gradtest_backends__", ()))
    try:
        gt, produced = plan.target(plan.args, plan.settings)
    except GroundTruthError as exc:
        return CheckRun(problem, selected, None, exc, {})
    except (TypeError, ValueError):
        raise  # bad arguments for the target: the caller's error, not an outcome
    except Exception as exc:  # the target's own function failed or crashed: no ground truth
        gt_error = GroundTruthError(f"{type(exc).__name__}: {exc}")
        gt_error.__cause__ = exc
        return CheckRun(problem, selected, None, gt_error, {})
    results = {}
    for name in selected:
        if name in plan.skip:
            continue
        value = produced.get(name, MissingDerivative(f"{name}: this target does not provide that derivative"))
        results[name] = BackendResult(error=value) if isinstance(value, BaseException) else BackendResult(grads=value)
    return CheckRun(problem, selected, gt, None, results)


# ---- judge -----------------------------------------------------------------------------------

def apply_semantics(outcome: Outcome, broken: bool, soft: bool) -> Outcome:
    """LuxTestUtils' rules: soft_fail turns failures into broken (and overrides broken_backends);
    a broken backend that fails is broken, one that passes is an unexpected pass."""
    failed = outcome.status in ("fail", "error")
    if soft:
        if failed:
            outcome.status, outcome.message = "broken", f"soft failure: {outcome.message}"
    elif broken:
        if failed:
            outcome.status, outcome.message = "broken", f"expected failure (broken_backends): {outcome.message}"
        elif outcome.status == "pass":
            outcome.status = "unexpected_pass"
            outcome.message = f"{outcome.backend} unexpectedly passed: remove it from broken_backends"
    return outcome


_ENGINE_BACKENDS = ("forward", "reverse")


def function_name(f: Any) -> str:
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__


def outcome_of(name: str, result: BackendResult, problem: GradientProblem, gt: GroundTruth,
               plan: CheckPlan) -> Outcome:
    """One result judged against the ground truth (before the semantics)."""
    if isinstance(result.error, BackendNotApplicable):  # e.g. forward mode through a reverse-only rule
        return Outcome(name, "skipped", message=f"not applicable: {result.error}", seconds=result.seconds)
    if result.error is not None:
        exc = result.error
        message = str(exc) if isinstance(exc, MissingDerivative) else f"{type(exc).__name__}: {exc}"
        if name in _ENGINE_BACKENDS and not isinstance(exc, (NotImplementedError, MissingDerivative, KernelCrash)):
            # the ground truth ran f on NumPy arrays, so a raw error here is the engine's arrays
            # meeting code that does not take them: say so rather than leave a bare traceback
            message += (f" (f runs on NumPy arrays but raised this on gradtest's {name}-mode arrays: "
                        "most likely a library function it calls does not accept them, e.g. it "
                        "inspects ndarray attributes or converts its input in C; see the "
                        "'Coverage' page of the docs)")
        return Outcome(name, "error", exception=exc, message=message, seconds=result.seconds)
    if isinstance(result.grads, DirectionalDerivatives):
        outcome = compare_directional(name, result.grads, gt, problem.diff_leaves, plan.atol, plan.rtol,
                                      problem.diff_paths, plan.nans)
        outcome.seconds = result.seconds
        return outcome
    try:
        grads = as_gradient_arrays(result.grads, problem.diff_leaves, problem.diff_paths, name)
    except GradientShapeError as exc:
        return Outcome(name, "error", exception=exc, message=str(exc), seconds=result.seconds)
    if gt.mode == "full":
        outcome = compare_full(name, grads, gt, problem.diff_leaves, problem.diff_paths, plan.atol, plan.rtol,
                               plan.fd.kinks, plan.nans)
    else:
        outcome = compare_directional(name, grads, gt, problem.diff_leaves, plan.atol, plan.rtol, problem.diff_paths,
                                      plan.nans)
    outcome.seconds = result.seconds
    return outcome


def judge(plan: CheckPlan, ran: CheckRun) -> GradientReport:
    """The report: each selected backend's outcome, with the plan's semantics."""
    outcomes: dict[str, Outcome] = {}
    for name in ran.selected:
        if name in plan.skip:
            outcomes[name] = Outcome(name, "skipped", message="in skip_backends")
            continue
        if ran.gt is None:
            # LuxTestUtils computes the ground truth outside the soft handling: without one, the
            # result is an error whatever soft_fail and broken_backends say (an f with a typo
            # must not pass as "broken")
            outcomes[name] = Outcome(name, "error", exception=ran.gt_error,
                                     message=f"no ground truth to compare with: {ran.gt_error}")
            continue
        outcome = outcome_of(name, ran.results[name], ran.problem, ran.gt, plan)
        outcomes[name] = apply_semantics(outcome, plan.is_broken(name), plan.is_soft(name))
    if all(o.status == "skipped" for o in outcomes.values()):
        warnings.warn(
            f"check_gradients({function_name(plan.f)}): no backend left to test "
            f"(selected: {ran.selected or 'none'}; skipped: {plan.skip or 'none'}); nothing was checked",
            NoBackendWarning,
            stacklevel=4,
        )
    gt = ran.gt
    report = GradientReport(
        function_name(plan.f), outcomes, plan.flat.gradient_tree(gt.gradients) if gt and gt.gradients else None,
        gt.mode if gt else "none", gt.method if gt else "", ran.problem.size, gt.evaluations if gt else 0,
        gt.seconds if gt else 0.0, list(gt.notes) if gt else [],
    )
    if ran.gt_error is not None:
        report.notes.append(f"ground truth failed: {ran.gt_error}")
        report.ground_truth_error = ran.gt_error
    report.notes += ran.problem.notes
    return report


def add_second_order(plan: CheckPlan, ran: CheckRun, report: GradientReport) -> None:
    """Adds one ``"<name>:hvp"`` outcome per selected backend, checking its Hessian-vector
    product against finite differences of <gradient, v>."""
    problem = ran.problem
    rng = np.random.default_rng(plan.fd.seed + 2)
    vs = [rng.standard_normal(leaf.shape) for leaf in problem.diff_leaves]
    passed = [n for n in ran.selected if report.outcomes.get(n) and report.outcomes[n].status == "pass"]
    reference = next((get_backend(n) for n in passed if n != "user"), None)
    gt2: GroundTruth | None = None
    gt2_error: BaseException | None = None
    if reference is None:
        gt2_error = GroundTruthError("no first-order gradient passed its check, so none can be differentiated")
    else:
        def directional_gradient(*args: Any, **kwargs: Any) -> float:
            inner = GradientProblem(problem.f, kwargs, flatten_args(args), problem.output, options=problem.options)
            return float(sum(np.vdot(g, v) for g, v in zip(reference.compute(inner), vs)))

        directional_gradient.__name__ = f"<grad {function_name(problem.f)}, v>"
        second = GradientProblem(directional_gradient, problem.kwargs, problem.flat, describe_output(0.0, rng))
        _isolate.announce("the second-order ground truth")
        try:
            gt2 = ground_truth(second, plan.fd, plan.ground_truth_dtype)
            gt2.notes.append(f"order 2: Hessian-vector products against finite differences of the "
                             f"{reference.name} gradient along a fixed random v")
        except GroundTruthError as exc:
            gt2_error = exc
    second_order = [n for n in ran.selected if get_backend(n).hvp is not None]
    if not second_order:
        warnings.warn(f"order=2: none of the selected backends ({', '.join(ran.selected) or 'none'}) has a "
                      "second-order mode; only first-order gradients were checked", NoBackendWarning, stacklevel=4)
    for name in second_order:
        key = f"{name}:hvp"
        if name in plan.skip or key in plan.skip:
            report.outcomes[key] = Outcome(key, "skipped", message="in skip_backends")
            continue
        if gt2 is None:
            outcome = Outcome(key, "error", exception=gt2_error, message=f"no ground truth to compare with: {gt2_error}")
        else:
            backend = get_backend(name)
            outcome = outcome_of(key, _timed(lambda backend=backend: backend.hvp(problem, vs), key), problem, gt2, plan)
        report.outcomes[key] = apply_semantics(outcome, plan.is_broken(name, key), plan.is_soft(name, key))
    if gt2 is not None:
        report.notes += gt2.notes
