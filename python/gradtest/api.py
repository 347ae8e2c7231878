"""The public checking API: check_gradients, test_gradients and gradient."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import _check, _events, _isolate
from ._check import GROUND_TRUTH_BACKEND, CheckSettings, NoBackendWarning
from ._compare import as_gradient_arrays
from ._finite_diff import FDOptions, GroundTruthError, finite_diff_backend, ground_truth
from ._problem import GradientProblem, OutputSpec, describe_output
from ._tree import FlatArgs, flatten_args, flatten_like, refuse_subclasses
from .backends import get_backend, register_backend
from .report import GradientReport

__all__ = ["CheckSettings", "NoBackendWarning", "check_gradients", "gradient", "test_gradients"]


def _user_gradient_backend(problem: GradientProblem) -> list[np.ndarray]:
    if problem.user_gradient is None:
        raise ValueError("backends: 'user' needs gradient= (a function returning the gradient tree)")
    if not problem.output.scalar:
        raise ValueError(
            "gradient=: f returns an array, so its gradient is a Jacobian; the 'user' backend "
            "checks scalar-valued functions (wrap f, e.g. lambda *a: f(*a).sum())"
        )
    args = problem.fresh_args()
    tree = problem.user_gradient(*args, **problem.kwargs)
    # it got copies, so the caller's arrays are safe; a gradient that writes into its inputs
    # deserves the note f gets for the same
    seen = flatten_args(args)
    mutated = [path for path, before, after in zip(problem.flat.paths, problem.flat.leaves, seen.leaves)
               if isinstance(before, np.ndarray) and isinstance(after, np.ndarray)
               and not np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")]
    if mutated:
        problem.notes.append(f"gradient= mutated its inputs: {', '.join(mutated)} (the caller's arrays are "
                             "untouched)")
    leaves = flatten_like(problem.flat, tree, "gradient= result")
    return [leaves[i] for i in problem.flat.differentiable]


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
    nans: bool = False,
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
        ``args`` (entries for non-differentiated leaves are ignored, ``None`` may stand for a
        whole subtree); for a single argument its tree may come unwrapped (``{'w': g}`` for
        ``({'w': g},)``). Checked as backend ``"user"``.
    ground_truth_backend : str, optional
        The reference; ``"finite_diff"`` (default) or another backend's name.
    ground_truth_dtype : dtype or None, optional
        The dtype of the finite-difference computation (float64 by default, whatever the
        inputs). ``None``: the inputs' own dtype (promoted when the differentiated arrays
        differ; float32 for float16 inputs), as ``ground_truth_eltype = nothing`` in
        LuxTestUtils.
    atol, rtol : float, optional
        Override the default tolerances (see the docs' tolerance page).
    nans : bool, optional
        True: a NaN in the same element of the ground truth and of a backend's gradient is a
        match (as ``nans=`` of :func:`check_approx` and of LuxTestUtils' ``test_gradients``).
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
        Finite-difference options (see :doc:`tolerances`): ``method`` ('central', 'forward',
        'backward'), ``richardson`` (bool; True, the default, selects the adaptive rule),
        ``rel_step`` (a fixed step base instead), ``mode`` ('auto', 'full', 'directional'),
        ``time_budget`` (seconds, default 5), ``n_directions``, ``seed``, ``kinks`` ('report':
        a value between the one-sided derivatives at a kink passes and the kink is listed;
        'fail': held to the central difference). Options named after a backend go to that
        backend, e.g. ``forward_chunk_size=8``. ``isolate=True`` runs the whole check of a Python
        ``f`` in a forked child process (POSIX), so that a crash of f, or of a C extension it
        calls, is a report, not the end of your process: a backend that crashes is an error and
        the others are still checked; a crash elsewhere leaves no ground truth. ``timeout``
        (seconds, with ``isolate=True``) kills a run that takes longer, with every process f
        started. For C kernels, both are the kernel's own options (see :class:`CKernel`).

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
    plan = _check.parse(
        f, args, backends=backends, skip_backends=skip_backends, broken_backends=broken_backends,
        soft_fail=soft_fail, gradient=gradient, ground_truth_backend=ground_truth_backend,
        ground_truth_dtype=ground_truth_dtype, atol=atol, rtol=rtol, nans=nans, kwargs=kwargs, order=order,
        fd_options=fd_options,
    )
    if plan.isolate:
        n_elements = sum(int(np.size(plan.flat.leaves[i])) for i in plan.flat.differentiable)
        return _isolate.check_in_child(lambda: _report(plan), _check.function_name(f), n_elements, plan.timeout)
    return _report(plan)


def _report(plan: _check.CheckPlan) -> GradientReport:
    ran = _check.run(plan)
    report = _check.judge(plan, ran)
    if plan.order == 2:
        _check.add_second_order(plan, ran, report)
    return report


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
        With the report table as its message; also when nothing was checked (``backends=[]``,
        or every backend skipped).
    GroundTruthError
        When there is no ground truth (f raised, or its values were not finite), with f's
        exception as the cause: an error, never a soft or broken failure.
    """
    __tracebackhide__ = True  # pytest: point at the caller's line, not at gradtest's
    report = check_gradients(f, *args, **options)
    error: Exception | None = None
    if report.ground_truth_error is not None:
        # not an AssertionError: a softfail marker must not turn f's own exception into "broken"
        error = GroundTruthError("gradient check could not run: no ground truth "
                                 f"({report.ground_truth_error})\n" + str(report))
        error.__cause__ = report.ground_truth_error
    elif not any(o.status != "skipped" for o in report.outcomes.values()):
        error = AssertionError(
            f"gradient check failed: nothing was checked (backends run: none; skipped: "
            f"{', '.join(report.outcomes) or 'none'})\n" + str(report))
    elif report.failures:
        error = AssertionError("gradient check failed\n" + str(report))
    _events.emit(report, error)
    if error is not None:
        raise error
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
    refuse_subclasses(flat)
    if not flat.differentiable:
        raise ValueError("args: no differentiable argument; gradtest differentiates floating NumPy arrays")
    if backend == GROUND_TRUTH_BACKEND:
        problem = GradientProblem(f, kwargs or {}, flat, _SCALAR)
        out = f(*problem.fresh_args(), **problem.kwargs)
        problem.output = describe_output(out, np.random.default_rng(0))
        if not problem.output.scalar:
            raise ValueError(
                f"f: gradient() needs a scalar-valued function, f returned {type(out).__name__} "
                f"of shape {np.shape(out)}"
            )
        opts = FDOptions.from_kwargs({"mode": "full", **fd_options})
        grads = ground_truth(problem, opts).gradients
    else:
        if fd_options:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(fd_options)} for backend {backend!r}")
        # the backend's own evaluation of f checks that it is scalar (_ScalarOutput.reduce): a
        # plain call first would cost a whole forward pass more than vjp() takes
        problem = GradientProblem(f, kwargs or {}, flat, _SCALAR)
        grads = as_gradient_arrays(impl.compute(problem), flat.diff_leaves, flat.diff_paths, backend)
    return flat.gradient_tree(grads)


class _ScalarOutput(OutputSpec):
    """The output reduction of gradient(): f must return a real scalar, which is used as is. Its
    ``reduce`` checks each output it is given (plain, or a backend's Tracked, Dual or tensor) so
    that the backend's own call of f is the only one."""

    def __init__(self) -> None:
        super().__init__(True, [], False)

    def reduce(self, out: Any, dtype: Any = None, dot: Callable[[np.ndarray, Any], Any] | None = None) -> Any:
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            return out
        kind = getattr(out, "dtype", None)
        shape = getattr(out, "shape", None)
        if shape is not None and len(shape) == 0:
            if isinstance(kind, np.dtype):  # NumPy, Tracked, Dual, JAX
                if kind.kind in "fiu":
                    return out
            elif kind is not None and str(kind).removeprefix("torch.").startswith(("float", "int", "uint", "bfloat")):
                return out
        value = getattr(out, "value", out)  # a Tracked or Dual: name the array it stands for
        if kind is None or str(getattr(kind, "name", kind)).startswith(("complex", "object", "str", "<U")):
            raise TypeError(f"f returned {type(value).__name__}"
                            + (f" of dtype {kind}" if kind is not None else "")
                            + "; expected a real number or real floating arrays")
        raise ValueError(
            f"f: gradient() needs a scalar-valued function, f returned {type(value).__name__} "
            f"of shape {tuple(np.shape(value)) if shape is not None or isinstance(value, np.ndarray) else ()}"
        )


_SCALAR = _ScalarOutput()


register_backend(
    "finite_diff", finite_diff_backend, default=False,
    description="finite differences in the C core (the default ground truth)",
)
register_backend(
    "user", _user_gradient_backend, default=False,
    description="the hand-written gradient passed as gradient=",
)
