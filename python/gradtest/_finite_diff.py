"""The finite-difference ground truth, computed by the C core (csrc/core/fd.c).

The core perturbs one working copy of the differentiated leaves in place and calls back into f on
NumPy views of that copy, so no argument tree is copied per evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from . import _core
from ._problem import GradientProblem

METHODS = ("central", "forward", "backward")
MODES = ("auto", "full", "directional")
KINK_RULES = ("report", "fail")
MIN_DIRECTIONS = 16  # fewer leave too few independent patterns to name a wrong element
MAX_DIRECTIONS = 64
#: f's noise bound, in standard deviations of the measured noise (the C kernels' too)
NOISE_FACTOR = _core.NOISE_FACTOR
#: evaluations an adaptive component or direction takes, on average, for planning the mode
EVALS_PER_COMPONENT = 16
EVALS_PER_DIRECTION = 12
#: the share of time_budget the ground truth plans for (the backends and the comparison need
#: the rest)
PLAN_SHARE = 0.5
#: calls of f at x that time it for the plan
TIMED_CALLS = 3


@dataclasses.dataclass(frozen=True)
class FDOptions:
    """Finite-difference settings (the ``**fd_options`` of :func:`gradtest.check_gradients`).

    Attributes
    ----------
    method : {'central', 'forward', 'backward'}
        The difference formula.
    richardson : bool
        Extrapolate: with ``rel_step=0`` (the default) the adaptive rule, a Neville tableau over
        steps that halve from a tenth of each component's scale, with an error bound for the
        value returned; ``False`` takes a single fixed step (the classic rule).
    rel_step : float
        A fixed step base h0 (step ``h0 * |x_i|``) with one Richardson extrapolation over h and
        h/2 instead of the adaptive rule; 0 (default) selects the adaptive rule.
    mode : {'auto', 'full', 'directional'}
        ``'full'`` differentiates every component (O(n) evaluations); ``'directional'`` checks k
        random directions (O(k) evaluations) and localises single wrong elements; ``'auto'``
        chooses up front from the measured cost of f, so that the ground truth fits in about half
        of ``time_budget`` (the report says which ran and why).
    time_budget : float
        Seconds a check should take in ``'auto'`` mode (default 5).
    n_directions : int or None
        Directions for directional mode; None fills the time budget (8 to 64).
    seed : int
        Seed of the random cotangent and directions, so that runs are reproducible.
    kinks : {'report', 'fail'}
        Where f is not differentiable at x (its one-sided derivatives differ), ``'report'``
        (default) accepts a backend value between or at the one-sided derivatives and lists the
        kink in the report; ``'fail'`` holds such elements to the central difference.
    """

    method: str = "central"
    richardson: bool = True
    rel_step: float = 0.0
    mode: str = "auto"
    time_budget: float = 5.0
    n_directions: int | None = None
    seed: int = 0
    kinks: str = "report"

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> FDOptions:
        """Validates keyword options; unknown names raise TypeError naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise TypeError(
                f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; finite-difference "
                f"options are {', '.join(sorted(fields))}"
            )
        opts = cls(**options)
        if opts.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {opts.method!r}")
        if opts.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {opts.mode!r}")
        if opts.kinks not in KINK_RULES:
            raise ValueError(f"kinks: expected one of {KINK_RULES}, got {opts.kinks!r}")
        if isinstance(opts.time_budget, bool) or not isinstance(opts.time_budget, (int, float, np.number)) \
                or not (opts.time_budget > 0):
            raise ValueError(f"time_budget: expected seconds > 0, got {opts.time_budget!r}")
        if opts.n_directions is not None and (
                isinstance(opts.n_directions, bool) or not isinstance(opts.n_directions, (int, np.integer))
                or opts.n_directions < 1):
            raise ValueError(f"n_directions: expected an integer >= 1, got {opts.n_directions!r}")
        if isinstance(opts.rel_step, bool) or not isinstance(opts.rel_step, (int, float, np.number)) \
                or not (opts.rel_step >= 0) or not np.isfinite(opts.rel_step):
            raise ValueError(f"rel_step: expected a finite number >= 0, got {opts.rel_step!r}")
        if isinstance(opts.seed, bool) or not isinstance(opts.seed, (int, np.integer)) or opts.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {opts.seed!r}")
        if not isinstance(opts.richardson, (bool, np.bool_)):
            raise ValueError(f"richardson: expected True or False, got {opts.richardson!r}")
        return opts

    @property
    def adaptive(self) -> bool:
        return bool(self.richardson) and not self.rel_step > 0

    def describe(self) -> str:
        if self.adaptive:
            return self.method + " adaptive"
        return self.method + ("+Richardson" if self.richardson else "")


@dataclasses.dataclass
class GroundTruth:
    """The reference the backends are compared with.

    Attributes
    ----------
    mode : {'full', 'directional'}
        Which mode ran.
    gradients : list of numpy.ndarray or None
        Full mode: one float64 array per differentiated leaf.
    errors : list of numpy.ndarray or None
        Full mode: the per-component error bounds of the finite differences.
    method : str
        The formula, e.g. ``'central adaptive'``.
    evaluations : int
        Calls of f made.
    seconds : float
        Wall time of the ground truth.
    dtype : numpy.dtype
        The dtype it was computed in.
    derivatives, derivative_errors : numpy.ndarray or None
        Directional mode: the k directional derivatives and their error bounds.
    seed : int
        Directional mode: the family of the directions (see :func:`direction`).
    scale : numpy.ndarray or None
        The per-component scales (flat), which the steps and directions follow.
    noise : float
        The noise level assumed for f's values (absolute).
    notes : list of str
        Anything the user should know (the mode and why, mutated inputs).
    probe : ComponentProbe or None
        Computes more derivatives at the same x (one-sided ones at kinks, single components in
        directional mode); None for ground truths that cannot (another backend, a C kernel).
    """

    mode: str
    gradients: list[np.ndarray] | None
    errors: list[np.ndarray] | None
    method: str
    evaluations: int
    seconds: float
    dtype: np.dtype
    derivatives: np.ndarray | None = None
    derivative_errors: np.ndarray | None = None
    seed: int = 0
    scale: np.ndarray | None = None
    noise: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    probe: ComponentProbe | None = None

    @property
    def n_directions(self) -> int:
        return 0 if self.derivatives is None else int(self.derivatives.size)

    @property
    def directions(self) -> DirectionFamily | None:
        """Directional mode: the directions the derivatives were taken along."""
        if self.mode != "directional" or self.scale is None:
            return None
        return DirectionFamily(self.seed, self.n_directions, self.scale)


@dataclasses.dataclass(frozen=True)
class DirectionFamily:
    """The k directions of a directional ground truth, ``v_j = scale * z_j`` (flat over the
    concatenated differentiated leaves), regenerated from their seed rather than stored."""

    seed: int
    k: int
    scale: np.ndarray

    def vector(self, j: int) -> np.ndarray:
        """Direction j as a new float64 array of the flat size."""
        return _core.direction(self.seed, j, self.scale)


class GroundTruthError(ValueError):
    """The ground truth could not be computed (f failed, or returned non-finite values)."""


class ComponentProbe:
    """Further finite-difference derivatives of f at the ground truth's x: single components,
    central or one-sided, each cached (the comparison of several backends asks for the same)."""

    def __init__(self, ws: _Workspace, fn: Any, u: np.ndarray | None, scale: np.ndarray,
                 opts: FDOptions, noise: float, out_eps: float, f0: float, namer: Any) -> None:
        self._ws, self._fn, self._u, self._scale = ws, fn, u, scale
        self._opts, self._noise, self._out_eps, self._f0 = opts, noise, out_eps, f0
        self._cache: dict[tuple[str, int], tuple[float, float]] = {}
        self.name = namer  # flat index -> the element's name, e.g. args[0][3]
        self.evaluations = 0

    def derivatives(self, flat_indices: Any, method: str = "central") -> tuple[np.ndarray, np.ndarray]:
        """(values, error bounds) of the derivatives at the flat component indices.

        Raises
        ------
        GroundTruthError
            f raised.
        """
        idx = [int(i) for i in np.asarray(flat_indices).ravel()]
        missing = sorted({i for i in idx if (method, i) not in self._cache})
        if missing:
            ws = self._ws
            try:
                with np.errstate(all="ignore"):
                    values, errors, evals = _core.fd_components(
                        self._fn, ws.args, ws.kwargs or None, ws.x, self._u, self._scale, method,
                        self._opts.richardson, float(self._opts.rel_step), self._noise, self._out_eps,
                        np.asarray(missing, dtype=np.intp), self._f0)
            except Exception as exc:
                raise GroundTruthError(f"f raised while refining the ground truth: {exc!r}") from exc
            self.evaluations += evals
            for i, v, e in zip(missing, values, errors):
                self._cache[(method, i)] = (float(v), float(e))
        pairs = [self._cache[(method, i)] for i in idx]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


class _Workspace:
    """One working copy of the differentiated leaves, with the argument tree built on views of it."""

    def __init__(self, problem: GradientProblem, dtype: np.dtype) -> None:
        leaves = problem.diff_leaves
        self.sizes = [leaf.size for leaf in leaves]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.x = np.empty(int(self.offsets[-1]), dtype=dtype)
        self.views = []
        self.orders = []
        for leaf, start, stop in zip(leaves, self.offsets[:-1], self.offsets[1:]):
            # keep a Fortran-ordered input Fortran-ordered, so f sees the layout it was given
            order = "F" if leaf.flags.f_contiguous and not leaf.flags.c_contiguous else "C"
            view = self.x[start:stop].reshape(leaf.shape, order=order)
            view[...] = leaf
            self.views.append(view)
            self.orders.append(order)
        self.x0 = self.x.copy()
        self.kwargs = problem.kwargs
        self.args = problem.fresh_args(dict(zip(problem.flat.differentiable, self.views)))
        # the constant arrays f receives are the copies inside self.args; remember their values
        self.constants = [
            (path, arr, arr.copy())
            for path, arr in _array_leaves_with_paths(problem, self.args)
            if not any(arr is v for v in self.views)
        ]

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        return [
            flat[start:stop].reshape(v.shape, order=order).copy(order="C")
            for v, order, start, stop in zip(self.views, self.orders, self.offsets[:-1], self.offsets[1:])
        ]

    def mutated_paths(self, problem: GradientProblem) -> list[str]:
        changed = [
            path
            for path, v, start, stop in zip(
                problem.diff_paths, self.views, self.offsets[:-1], self.offsets[1:]
            )
            if not _same(self.x[start:stop], self.x0[start:stop])
        ]
        changed += [path for path, arr, before in self.constants if not _same(arr, before)]
        return changed


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _array_leaves_with_paths(problem: GradientProblem, args: tuple[Any, ...]):
    from ._tree import flatten_args

    flat = flatten_args(args)
    return [(p, leaf) for p, leaf in zip(flat.paths, flat.leaves) if isinstance(leaf, np.ndarray)]


def _reducer(problem: GradientProblem):
    """(callable, cotangent) for the C engine: the C glue dots a single array output with u
    itself; a tree output is reduced in Python first."""
    out = problem.output
    if out.scalar:
        return problem.f, None
    if not out.tree:
        return problem.f, out.cotangents[0].ravel()

    def reduced(*args: Any, **kwargs: Any) -> float:
        value = problem.f(*args, **kwargs)  # f's own errors propagate
        try:
            return float(out.reduce(value, np.float64))
        except ValueError:
            # the output's structure depends on x and changed at this perturbed point: no
            # quotient from this step (as the C glue does for a single array)
            return math.nan

    return reduced, None


def ground_truth(problem: GradientProblem, opts: FDOptions, dtype: Any = np.float64) -> GroundTruth:
    """Computes the finite-difference reference for ``problem``.

    Raises
    ------
    GroundTruthError
        If there is nothing to compare (no elements), the input or f(x) is not finite, f raises,
        a derivative is not finite, or f underflows so that every difference is zero; the
        message names the element where there is one.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"ground_truth_dtype: expected float64 or float32, got {dtype}")
    if problem.size == 0:
        raise GroundTruthError("nothing to compare: the differentiated arguments have 0 elements")
    ws = _Workspace(problem, dtype)
    _check_inputs_finite(problem, ws)
    fn, u = _reducer(problem)
    scale = step_scale(ws.x0, ws.offsets)
    out_eps = float(max(problem.output.eps, np.finfo(dtype).eps if dtype == np.float32 else 0.0))
    if problem.flat.adapters:  # torch/JAX leaves: f sees ws.x as the framework's arrays (frameworks.py)
        from .frameworks import bind_working_copy

        fn = bind_working_copy(fn, problem, ws.args, ws.views)
    start = time.perf_counter()
    notes: list[str] = []
    kwargs = ws.kwargs or None
    common = (opts.method, opts.richardson, float(opts.rel_step))
    try:
        # warnings at perturbed points (log of a negative near a domain edge) are not the user's
        # concern: a non-finite result is reported as such
        with np.errstate(all="ignore"):
            f0, t_eval = _value(fn, ws, u)
            mode = opts.mode
            if mode == "auto":
                planned = ws.x.size * EVALS_PER_COMPONENT * t_eval
                mode = "full" if planned <= PLAN_SHARE * opts.time_budget else "directional"
                if mode == "directional":
                    notes.append(
                        f"directional mode: a full ground truth of {ws.x.size} components would take about "
                        f"{planned:.1f} s at {t_eval * 1e3:.2g} ms per call of f (time_budget={opts.time_budget} s)")
            sigma, noise_evals = _core.fd_noise(fn, ws.args, kwargs, ws.x, u, scale, *common, 0.0, out_eps,
                                                opts.seed + 3)
            noise = NOISE_FACTOR * sigma
            result = None
            if mode == "full":
                # the full run is also timed: an auto run that overshoots gives way to directions
                limit = opts.time_budget if opts.mode == "auto" else 0.0
                result = _full(problem, ws, fn, u, scale, opts, noise, out_eps, dtype, notes, start, limit)
            if result is None:
                result = _directional(problem, ws, fn, u, scale, opts, noise, out_eps, dtype, notes, start, t_eval)
            result.evaluations += noise_evals + TIMED_CALLS
            result.noise = noise
            result.probe = ComponentProbe(ws, fn, u, scale, opts, noise, out_eps, f0,
                                          lambda i: _element_name(problem, ws, i))
    except GroundTruthError as exc:
        error: BaseException | None = exc
    except Exception as exc:
        error = GroundTruthError(f"f raised while computing the ground truth: {describe_exception(exc)}")
        error.__cause__ = exc
    else:
        error = None
    # a mutating f explains any other failure (its later calls saw other inputs), so it is named first
    mutated = ws.mutated_paths(problem)
    if mutated:
        raise GroundTruthError(
            f"f mutated its inputs: {', '.join(mutated)} changed while f ran (the caller's arrays are "
            "untouched); a ground truth of such an f means nothing: copy before writing") from error
    if error is not None:
        raise error
    return result


def _value(fn: Any, ws: _Workspace, u: np.ndarray | None) -> tuple[float, float]:
    """f(x) reduced to the checked scalar (not finite is an error reported before anything
    else), and the cost of a call: the fastest of TIMED_CALLS (the first may pay for caches,
    lazy imports or sleeping BLAS threads)."""
    times = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        out = fn(*ws.args, **ws.kwargs)
        times.append(time.perf_counter() - start)
        value = float(np.vdot(u, np.asarray(out, dtype=np.float64).ravel())) if u is not None \
            else float(np.asarray(out, dtype=np.float64))
        if not np.isfinite(value):
            raise GroundTruthError(f"f(x) is not finite ({value}) at the input itself")
    return value, min(times)


def describe_exception(exc: BaseException) -> str:
    """The exception's type and message, and where in the user's code it was raised."""
    where = ""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename + ":" + str(tb.tb_lineno))
        tb = tb.tb_next
    own = str(__file__).rsplit("/", 1)[0]
    user = [fr for fr in frames if not fr.startswith(own)]
    if user:
        where = f" at {user[-1].rsplit('/', 1)[-1]}"
    return f"{type(exc).__name__}: {exc}{where}"


def _check_inputs_finite(problem: GradientProblem, ws: _Workspace) -> None:
    bad = np.flatnonzero(~np.isfinite(ws.x0))
    if bad.size:
        i = int(bad[0])
        raise GroundTruthError(
            f"the input is not finite at {_element_name(problem, ws, i)} ({ws.x0[i]}); "
            f"{bad.size} of {ws.x0.size} elements are NaN or inf")


def _full(problem, ws, fn, u, scale, opts, noise, out_eps, dtype, notes, start, time_limit) -> GroundTruth | None:
    """The full ground truth, or None when it reached ``time_limit`` (seconds, 0 for none)
    before the last component."""
    grad, err, f0, evals, nonfinite, completed = _core.fd_gradient(
        fn, ws.args, ws.kwargs or None, ws.x, u, scale, opts.method, opts.richardson, float(opts.rel_step),
        noise, out_eps, float(time_limit),
    )
    if completed < ws.x.size:
        notes.append(
            f"directional mode: the full ground truth reached time_budget={opts.time_budget} s "
            f"after {completed} of {ws.x.size} components"
        )
        return None
    if nonfinite:
        bad = int(np.flatnonzero(~np.isfinite(grad))[0])
        raise GroundTruthError(_nonfinite_message(problem, ws, bad, nonfinite))
    if not np.any(grad) and abs(f0) < np.finfo(np.float64).tiny and _tiny_input(ws):
        raise GroundTruthError(
            f"f underflows at this input (f(x) = {f0} and every perturbed value is 0, with |x| <= "
            f"{float(np.max(np.abs(ws.x0))):.3g}): the ground truth is identically zero, so nothing "
            "can be checked; rescale the input")
    return GroundTruth("full", ws.split(grad), ws.split(err), opts.describe(), evals,
                       time.perf_counter() - start, dtype, scale=scale, notes=notes)


def _tiny_input(ws: _Workspace) -> bool:
    # squares of |x| below 1e-154 underflow: the range where a zero ground truth means underflow
    return float(np.max(np.abs(ws.x0.astype(np.float64)))) < 1e-154


def _nonfinite_message(problem: GradientProblem, ws: _Workspace, bad: int, count: int) -> str:
    x = float(ws.x0[bad])
    name = _element_name(problem, ws, bad)
    if x != 0 and abs(x) < np.finfo(ws.x0.dtype).tiny:
        return (f"the input is subnormal at {name} ({x:.3g}): its finite-difference steps underflow, "
                "so its derivative cannot be computed; rescale the input")
    return (f"the ground truth is not finite at {name} ({count} of {ws.x.size} components): f returned "
            "NaN or inf (or an output of another shape) at every step near the input")


def _directional(problem, ws, fn, u, scale, opts, noise, out_eps, dtype, notes, start, t_eval) -> GroundTruth:
    n = ws.x.size
    if opts.n_directions:
        k = int(opts.n_directions)
    else:
        fit = PLAN_SHARE * opts.time_budget / max(t_eval * EVALS_PER_DIRECTION, 1e-9)
        k = int(max(MIN_DIRECTIONS, min(n, fit, MAX_DIRECTIONS)))
    seed = opts.seed + 1
    d, derr, f0, evals = _core.fd_directional(fn, ws.args, ws.kwargs or None, ws.x, u, scale, opts.method,
                                              opts.richardson, float(opts.rel_step), noise, out_eps, seed, k)
    if not np.all(np.isfinite(d)):
        raise GroundTruthError("the directional ground truth is not finite: f returned NaN or inf near the input")
    if not np.any(d) and abs(f0) < np.finfo(np.float64).tiny and _tiny_input(ws):
        raise GroundTruthError(
            f"f underflows at this input (f(x) = {f0} along every direction): the ground truth is "
            "identically zero, so nothing can be checked; rescale the input")
    notes.append(f"{k} random directions (seed {seed}), each to an extrapolated accuracy")
    return GroundTruth("directional", None, None, opts.describe(), evals, time.perf_counter() - start,
                       dtype, derivatives=d, derivative_errors=derr, seed=seed, scale=scale, notes=notes)


def step_scale(x0: np.ndarray, offsets: Any) -> np.ndarray:
    """Each component's scale s_i, which its steps (and directional perturbations) follow:
    ``max(|x_i|, rms/10)`` with rms that of its leaf (the segment of the flat ``x0`` between
    consecutive ``offsets``), or 1 where both are 0. The C-kernel runner uses the same rule."""
    scale = np.abs(x0.astype(np.float64))
    for start, stop in zip(offsets[:-1], offsets[1:]):
        seg = scale[start:stop]
        if not seg.size:
            continue
        finite = seg[np.isfinite(seg)]
        rms = float(np.sqrt(np.mean(np.square(finite)))) if finite.size else 0.0
        floor = 0.1 * rms if rms > 0 and np.isfinite(rms) else 1.0
        np.maximum(seg, floor, out=seg)
    scale[~np.isfinite(scale) | (scale == 0)] = 1.0
    return scale


def _element_name(problem: GradientProblem, ws: _Workspace, flat_index: int) -> str:
    leaf = int(np.searchsorted(ws.offsets, flat_index, side="right") - 1)
    local = flat_index - int(ws.offsets[leaf])
    shape = problem.diff_leaves[leaf].shape
    index = np.unravel_index(local, shape, order=ws.orders[leaf]) if shape else ()
    return problem.diff_paths[leaf] + (f"[{', '.join(map(str, index))}]" if index else "")


def finite_diff_backend(problem: GradientProblem) -> list[np.ndarray]:
    """The ``"finite_diff"`` backend: a full central-Richardson gradient in float64."""
    opts = FDOptions(mode="full")
    return ground_truth(problem, opts).gradients  # type: ignore[return-value]
