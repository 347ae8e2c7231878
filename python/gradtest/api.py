"""The public checking API: check_gradients, test_gradients and gradient."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import _events
from ._compare import GradientShapeError, as_gradient_arrays, compare_directional, compare_full
from ._finite_diff import FDOptions, GroundTruth, GroundTruthError, finite_diff_backend, ground_truth
from ._problem import GradientProblem, describe_output
from ._tree import FlatArgs, flatten_args, flatten_like
from .backends import BackendNotApplicable, available_backends, get_backend, not_run_reason, register_backend
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


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separates finite-difference options from backend options, which are named after their
    backend (``forward_chunk_size`` for ``"forward"``). Anything else is left with the
    finite-difference options, whose validation names it."""
    backend_options = {
        key: value for key, value in options.items()
        if any(key.startswith(name + "_") for name in available_backends())
    }
    return {k: v for k, v in options.items() if k not in backend_options}, backend_options


def _names(value: str | Iterable[str] | None, argument: str, what: str = "backend names") -> list[str]:
    """A string or an iterable of strings as a list; a TypeError naming ``argument`` otherwise.
    Also used for the dispatch checks' ``allow=`` patterns."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{argument}: expected a list of {what}, got {type(value).__name__}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{argument}: expected {what} (str), got {name!r}")
    return names


def _check_known(names: Sequence[str], known: Sequence[str], argument: str) -> None:
    for name in names:
        if name not in known:
            raise ValueError(f"{argument}: unknown backend {name!r}; known backends: {', '.join(known)}")


def _apply_semantics(outcome: Outcome, broken: bool, soft: bool) -> Outcome:
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


def _function_name(f: Any) -> str:
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__


def _user_gradient_backend(problem: GradientProblem) -> list[np.ndarray]:
    if problem.user_gradient is None:
        raise ValueError("backends: 'user' needs gradient= (a function returning the gradient tree)")
    if not problem.output.scalar:
        raise ValueError(
            "gradient=: f returns an array, so its gradient is a Jacobian; the 'user' backend "
            "checks scalar-valued functions (wrap f, e.g. lambda *a: f(*a).sum())"
        )
    tree = problem.user_gradient(*problem.fresh_args(), **problem.kwargs)
    leaves = flatten_like(problem.flat, tree, "gradient= result")
    return [leaves[i] for i in problem.flat.differentiable]


def _select_backends(
    problem: GradientProblem, backends: Sequence[str] | None, ground_truth_backend: str
) -> list[str]:
    if backends is not None:
        if "user" in backends and problem.user_gradient is None:
            raise ValueError("backends: 'user' needs gradient= (a function returning the gradient tree)")
        return [b for b in backends if b != ground_truth_backend]
    selected = []
    not_run: dict[str, list[str]] = {}
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
            not_run.setdefault(why, []).append(name)
    if not_run and not any("not run by default" in note for note in problem.notes):
        problem.notes.append("not run by default: " + "; ".join(
            f"{', '.join(names)} ({why})" for why, names in not_run.items()))
    return selected


def _run_backend(
    name: str, problem: GradientProblem, gt: GroundTruth, atol: float | None, rtol: float | None
) -> Outcome:
    start = time.perf_counter()
    try:
        raw = get_backend(name).compute(problem)
        grads = as_gradient_arrays(raw, problem.diff_leaves, problem.diff_paths, name)
    except BackendNotApplicable as exc:  # e.g. forward mode through a reverse-only custom rule
        return Outcome(name, "skipped", message=f"not applicable: {exc}", seconds=time.perf_counter() - start)
    except Exception as exc:  # the backend's failure is its outcome, the run goes on
        return Outcome(name, "error", exception=exc, message=f"{type(exc).__name__}: {exc}",
                       seconds=time.perf_counter() - start)
    return _compare(name, grads, problem, gt, atol, rtol, time.perf_counter() - start)


def _compare(name: str, grads: list[np.ndarray], problem: GradientProblem, gt: GroundTruth,
             atol: float | None, rtol: float | None, seconds: float) -> Outcome:
    if gt.mode == "full":
        outcome = compare_full(name, grads, gt, problem.diff_leaves, problem.diff_paths, atol, rtol)
    else:
        outcome = compare_directional(name, grads, gt, problem.diff_leaves, atol, rtol)
    outcome.seconds = seconds
    return outcome


def _tolerance(value: float | None, argument: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (value >= 0) or not np.isfinite(value):
        raise ValueError(f"{argument}: expected a finite number >= 0, got {value!r}")
    return value


def check_gradients(
    f: Callable[..., Any],
    *args: Any,
    backends: Sequence[str] | None = None,
    skip_backends: Iterable[str] = (),
    broken_backends: Iterable[str] = (),
    soft_fail: bool | Iterable[str] = False,
    gradient: Callable[..., Any] | None = None,
    ground_truth_backend: str = GROUND_TRUTH_BACKEND,
    ground_truth_dtype: Any = np.float64,
    atol: float | None = None,
    rtol: float | None = None,
    kwargs: dict[str, Any] | None = None,
    order: int = 1,
    **fd_options: Any,
) -> GradientReport:
    """Checks every enabled backend's gradient of ``f`` against a finite-difference ground truth.

    Never raises for a mismatch: the report says what happened (use :func:`test_gradients` in
    tests). Bad arguments raise ``TypeError``/``ValueError`` naming the argument.

    Parameters
    ----------
    f : callable
        The function under test, ``f(*args, **kwargs)``. It may return a real scalar, an array or
        a tree of arrays; a non-scalar output is checked through a fixed random cotangent u, i.e.
        on the scalar ``<u, f(x)>`` (seeded by ``seed``).
    *args : Any
        Arguments, possibly nested in dicts, lists, tuples, namedtuples and dataclasses. Floating
        NumPy arrays (float16/32/64, any shape) are differentiated; everything else, and anything
        wrapped in :class:`Constant`, is held constant.
    backends : list of str, optional
        Run only these backends. ``None`` runs every default backend that applies to the inputs,
        plus ``"user"`` when ``gradient=`` is given.
    skip_backends : list of str, optional
        Backends reported as ``skipped``.
    broken_backends : list of str, optional
        Backends expected to fail: failing is ``broken``, passing is ``unexpected_pass`` (a failure).
    soft_fail : bool or list of str, optional
        ``True`` (all backends) or a list of names whose failures and errors are recorded as
        ``broken``; overrides ``broken_backends``.
    gradient : callable, optional
        A hand-written gradient, ``gradient(*args, **kwargs)`` returning a tree shaped like
        ``args`` (entries for non-differentiated leaves are ignored); checked as backend ``"user"``.
    ground_truth_backend : str, optional
        The reference; ``"finite_diff"`` (default) or another backend's name.
    ground_truth_dtype : dtype, optional
        The dtype of the finite-difference computation (float64 by default, whatever the inputs).
    atol, rtol : float, optional
        Override the default tolerances (see the docs' tolerance page).
    kwargs : dict, optional
        Keyword arguments for ``f`` (never differentiated).
    order : {1, 2}, optional
        2 also checks Hessian-vector products ``H v`` (v a fixed random direction, seeded by
        ``seed``) of every selected backend with a second-order mode (``"reverse"``: reverse over
        reverse), reported as ``"<name>:hvp"``,
        against finite differences of ``<grad f(x), v>``, the gradient being that of the first
        backend whose first-order check passed (as jax's ``check_grads(order=2)``). A backend
        name in ``skip_backends``/``broken_backends``/``soft_fail`` covers both orders;
        ``"<name>:hvp"`` names the second order alone.
    **fd_options
        Finite-difference options: ``method`` ('central', 'forward', 'backward'), ``richardson``
        (bool), ``rel_step``, ``mode`` ('auto', 'full', 'directional'), ``time_budget`` (seconds,
        default 5), ``n_directions``, ``seed``. Options named after a backend go to that backend,
        e.g. ``forward_chunk_size=8``.

    Returns
    -------
    GradientReport
        One :class:`Outcome` per backend, with ``report.passed``.

    Raises
    ------
    ValueError
        Unknown backend names, a name in both ``skip_backends`` and ``broken_backends``, no
        differentiable argument, invalid options.
    TypeError
        A non-callable ``f`` or ``gradient``, unexpected keyword arguments.

    Examples
    --------
    >>> import numpy as np, gradtest
    >>> f = lambda x: np.sum(x ** 2)
    >>> report = gradtest.check_gradients(f, np.arange(3.0), gradient=lambda x: 2 * x)
    >>> report.outcomes["user"].status
    'pass'
    """
    hook = getattr(f, "__gradtest_check__", None)
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    known = available_backends() + [n for n in getattr(f, "__gradtest_backends__", ()) if n not in available_backends()]
    if order == 2:
        known += [f"{n}:hvp" for n in available_backends() if get_backend(n).hvp is not None]
    backend_list = None if backends is None else _names(backends, "backends")
    skip = _names(skip_backends, "skip_backends")
    broken = _names(broken_backends, "broken_backends")
    soft_all = soft_fail is True
    soft = [] if isinstance(soft_fail, bool) else _names(soft_fail, "soft_fail")
    for names, argument in ((backend_list or [], "backends"), (skip, "skip_backends"),
                            (broken, "broken_backends"), (soft, "soft_fail"), ([ground_truth_backend], "ground_truth_backend")):
        _check_known(names, known, argument)
    both = sorted(set(skip) & set(broken))
    if both:
        raise ValueError(f"skip_backends and broken_backends both name {', '.join(map(repr, both))}; a backend is either skipped or broken")
    atol, rtol = _tolerance(atol, "atol"), _tolerance(rtol, "rtol")
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    if gradient is not None and not callable(gradient):
        raise TypeError(f"gradient: expected a callable returning the gradient tree, got {type(gradient).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"kwargs: expected a dict of keyword arguments for f, got {type(kwargs).__name__}")
    gt_dtype = np.dtype(ground_truth_dtype)

    flat = flatten_args(args)
    if not flat.differentiable:
        kinds = ", ".join(f"{p}: {type(leaf).__name__}" for p, leaf in zip(flat.paths, flat.leaves)) or "no arguments"
        raise ValueError(
            "args: no differentiable argument; gradtest differentiates floating NumPy arrays, "
            f"torch tensors and JAX arrays (float16, float32, float64), got {kinds}"
        )

    if hook is not None:
        if order != 1:
            raise ValueError("order: C targets are checked at order 1 only")
        fd_names = {fld.name for fld in dataclasses.fields(FDOptions)}
        settings = CheckSettings({k: v for k, v in fd_options.items() if k in fd_names}, gt_dtype,
                                 {k: v for k, v in fd_options.items() if k not in fd_names})
        FDOptions.from_kwargs(settings.fd_options)
        problem = GradientProblem(f, kwargs or {}, flat, describe_output(0.0, np.random.default_rng(0)))
        selected = backend_list if backend_list is not None else list(getattr(f, "__gradtest_backends__", ()))
        try:
            gt, results = hook(args, settings)
        except GroundTruthError as exc:
            return _finish(f, problem, None, exc, selected, skip, broken, soft_all, soft, atol, rtol, {})
        except (TypeError, ValueError):
            raise  # bad arguments for the target: the caller's error, not an outcome
        except Exception as exc:  # the target's own function failed or crashed: no ground truth
            gt_error = GroundTruthError(f"{type(exc).__name__}: {exc}")
            gt_error.__cause__ = exc
            return _finish(f, problem, None, gt_error, selected, skip, broken, soft_all, soft, atol, rtol, {})
        compute = {name: (lambda name=name: results[name]) for name in results}
        return _finish(f, problem, gt, None, selected, skip, broken, soft_all, soft, atol, rtol, compute)

    fd_kwargs, backend_options = _split_options(fd_options)
    opts = FDOptions.from_kwargs(fd_kwargs)
    problem = GradientProblem(f, kwargs or {}, flat, describe_output(0.0, np.random.default_rng(0)), gradient,
                              backend_options)
    gt_error: Exception | None = None
    gt: GroundTruth | None = None
    try:
        out = f(*problem.fresh_args(), **problem.kwargs)
        problem.output = describe_output(out, np.random.default_rng(opts.seed))
        selected = _select_backends(problem, backend_list, ground_truth_backend)
        if ground_truth_backend == GROUND_TRUTH_BACKEND:
            gt = ground_truth(problem, opts, gt_dtype)
        else:
            start = time.perf_counter()
            raw = get_backend(ground_truth_backend).compute(problem)
            grads = as_gradient_arrays(raw, problem.diff_leaves, problem.diff_paths, ground_truth_backend)
            gt = GroundTruth("full", [np.asarray(g, np.float64) for g in grads],
                             [np.zeros(g.shape) for g in grads], ground_truth_backend, 0,
                             time.perf_counter() - start, np.dtype(np.float64))
    except (GroundTruthError, GradientShapeError, TypeError, ValueError, ArithmeticError) as exc:
        gt_error = exc
        selected = _select_backends(problem, backend_list, ground_truth_backend)
    except Exception as exc:  # f raised: reported as an error of every backend
        gt_error = GroundTruthError(f"f raised: {exc!r}")
        gt_error.__cause__ = exc
        selected = _select_backends(problem, backend_list, ground_truth_backend)
    report = _finish(f, problem, gt, gt_error, selected, skip, broken, soft_all, soft, atol, rtol, None)
    if order == 2:
        _add_second_order(report, problem, selected, opts, gt_dtype, skip, broken, soft_all, soft, atol, rtol)
    return report


def _add_second_order(report: GradientReport, problem: GradientProblem, selected: list[str], opts: FDOptions,
                      gt_dtype: np.dtype, skip, broken, soft_all, soft, atol, rtol) -> None:
    """Adds one ``"<name>:hvp"`` outcome per selected backend, checking its Hessian-vector
    product against finite differences of <gradient, v>."""
    rng = np.random.default_rng(opts.seed + 2)
    vs = [rng.standard_normal(leaf.shape) for leaf in problem.diff_leaves]
    passed = [n for n in selected if report.outcomes.get(n) and report.outcomes[n].status == "pass"]
    reference = next((get_backend(n) for n in passed if n != "user"), None)
    gt2: GroundTruth | None = None
    gt2_error: Exception | None = None
    if reference is None:
        gt2_error = GroundTruthError("no first-order gradient passed its check, so none can be differentiated")
    else:
        def directional_gradient(*args: Any, **kwargs: Any) -> float:
            inner = GradientProblem(problem.f, kwargs, flatten_args(args), problem.output, options=problem.options)
            return float(sum(np.vdot(g, v) for g, v in zip(reference.compute(inner), vs)))

        directional_gradient.__name__ = f"<grad {_function_name(problem.f)}, v>"
        second = GradientProblem(directional_gradient, problem.kwargs, problem.flat, describe_output(0.0, rng))
        try:
            gt2 = ground_truth(second, opts, gt_dtype)
            gt2.notes.append(f"order 2: Hessian-vector products against finite differences of the "
                             f"{reference.name} gradient along a fixed random v")
        except GroundTruthError as exc:
            gt2_error = exc
    second_order = [n for n in selected if get_backend(n).hvp is not None]
    if not second_order:
        warnings.warn(f"order=2: none of the selected backends ({', '.join(selected) or 'none'}) has a "
                      "second-order mode; only first-order gradients were checked", NoBackendWarning, stacklevel=3)
    for name in second_order:
        key = f"{name}:hvp"
        backend = get_backend(name)
        if name in skip or key in skip:
            report.outcomes[key] = Outcome(key, "skipped", message="in skip_backends")
            continue
        if gt2 is None:
            outcome = Outcome(key, "error", exception=gt2_error, message=f"no ground truth to compare with: {gt2_error}")
        else:
            start = time.perf_counter()
            try:
                raw = backend.hvp(problem, vs)
                hv = as_gradient_arrays(raw, problem.diff_leaves, problem.diff_paths, key)
                outcome = _compare(key, hv, problem, gt2, atol, rtol, time.perf_counter() - start)
            except Exception as exc:  # the backend's failure is its outcome
                outcome = Outcome(key, "error", exception=exc, message=f"{type(exc).__name__}: {exc}",
                                  seconds=time.perf_counter() - start)
        report.outcomes[key] = _apply_semantics(
            outcome, name in broken or key in broken, soft_all or name in soft or key in soft
        )
    if gt2 is not None:
        report.notes += gt2.notes


def _finish(f, problem, gt, gt_error, selected, skip, broken, soft_all, soft, atol, rtol, precomputed) -> GradientReport:
    outcomes: dict[str, Outcome] = {}
    for name in selected:
        if name in skip:
            outcomes[name] = Outcome(name, "skipped", message="in skip_backends")
            continue
        if gt_error is not None or gt is None:
            outcome = Outcome(name, "error", exception=gt_error,
                              message=f"no ground truth to compare with: {gt_error}")
        elif precomputed is not None:
            outcome = _precomputed_outcome(name, precomputed, problem, gt, atol, rtol)
        else:
            outcome = _run_backend(name, problem, gt, atol, rtol)
        outcomes[name] = _apply_semantics(outcome, name in broken, soft_all or name in soft)
    if all(o.status == "skipped" for o in outcomes.values()):
        warnings.warn(
            f"check_gradients({_function_name(f)}): no backend left to test "
            f"(selected: {selected or 'none'}; skipped: {skip or 'none'}); nothing was checked",
            NoBackendWarning,
            stacklevel=3,
        )
    report = GradientReport(
        _function_name(f), outcomes, problem.flat.gradient_tree(gt.gradients) if gt and gt.gradients else None,
        gt.mode if gt else "none", gt.method if gt else "", problem.size, gt.evaluations if gt else 0,
        gt.seconds if gt else 0.0, list(gt.notes) if gt else [],
    )
    report.notes += problem.notes
    if gt_error is not None:
        report.notes.append(f"ground truth failed: {gt_error}")
    return report


def _precomputed_outcome(name, precomputed, problem, gt, atol, rtol) -> Outcome:
    if name not in precomputed:
        return Outcome(name, "error", message=f"{name}: this target does not provide that derivative")
    result = precomputed[name]()
    if isinstance(result, BaseException):
        return Outcome(name, "error", exception=result, message=f"{type(result).__name__}: {result}")
    try:
        grads = as_gradient_arrays(result, problem.diff_leaves, problem.diff_paths, name)
    except GradientShapeError as exc:
        return Outcome(name, "error", exception=exc, message=str(exc))
    return _compare(name, grads, problem, gt, atol, rtol, 0.0)


def test_gradients(f: Callable[..., Any], *args: Any, **options: Any) -> GradientReport:
    """Like :func:`check_gradients`, but raises ``AssertionError`` (a pytest failure) when any
    backend fails, errors, or passes while marked broken.

    Takes the same arguments as :func:`check_gradients`. Inside pytest, with gradtest's plugin,
    every backend's outcome also shows up in the test summary (broken ones as xfail).

    Returns
    -------
    GradientReport
        The report, when nothing unexpected happened.

    Raises
    ------
    AssertionError
        With the report table as its message.
    """
    report = check_gradients(f, *args, **options)
    _events.emit(report)
    if report.failures:
        raise AssertionError("gradient check failed\n" + str(report))
    return report


test_gradients.__test__ = False  # type: ignore[attr-defined]  # not a test when imported into one


def gradient(f: Callable[..., Any], *args: Any, backend: str = GROUND_TRUTH_BACKEND,
             kwargs: dict[str, Any] | None = None, **fd_options: Any) -> tuple[Any, ...]:
    """The gradient of a scalar-valued ``f`` with respect to ``args`` from one backend.

    Parameters
    ----------
    f : callable
        Returns a real scalar.
    *args : Any
        As for :func:`check_gradients`.
    backend : str, optional
        The backend's name (``"finite_diff"`` by default).
    kwargs : dict, optional
        Keyword arguments for ``f``.
    **fd_options
        Finite-difference options, for ``backend="finite_diff"``.

    Returns
    -------
    tuple
        A tree shaped like ``args``: the gradient at each differentiated leaf, ``None`` elsewhere.

    Examples
    --------
    >>> import numpy as np, gradtest
    >>> (g,) = gradtest.gradient(lambda x: np.sum(x ** 2), np.array([1.0, 2.0]))
    >>> np.round(g, 6)
    array([2., 4.])
    """
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    impl = get_backend(backend)
    if backend == "user":
        raise ValueError("backend: 'user' has no gradient of its own; pass gradient= to check_gradients")
    flat: FlatArgs = flatten_args(args)
    if not flat.differentiable:
        raise ValueError("args: no differentiable argument; gradtest differentiates floating NumPy arrays")
    problem = GradientProblem(f, kwargs or {}, flat, describe_output(0.0, np.random.default_rng(0)))
    out = f(*problem.fresh_args(), **problem.kwargs)
    problem.output = describe_output(out, np.random.default_rng(0))
    if not problem.output.scalar:
        raise ValueError(
            f"f: gradient() needs a scalar-valued function, f returned {type(out).__name__} "
            f"of shape {np.shape(out)}"
        )
    if backend == GROUND_TRUTH_BACKEND:
        opts = FDOptions.from_kwargs({"mode": "full", **fd_options})
        grads = ground_truth(problem, opts).gradients
    else:
        if fd_options:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(fd_options)} for backend {backend!r}")
        grads = as_gradient_arrays(impl.compute(problem), flat.diff_leaves, flat.diff_paths, backend)
    return flat.gradient_tree(grads)


register_backend(
    "finite_diff", finite_diff_backend, default=False,
    description="finite differences in the C core (the default ground truth)",
)
register_backend(
    "user", _user_gradient_backend, default=False,
    description="the hand-written gradient passed as gradient=",
)
