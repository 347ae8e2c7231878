"""The finite-difference ground truth, computed by the C core (csrc/core/fd.c).

The core perturbs one working copy of the differentiated leaves in place and calls back into f on
NumPy views of that copy, so no argument tree is copied per evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from . import _core
from ._problem import GradientProblem
from ._tree import output_leaves

METHODS = ("central", "forward", "backward")
MIN_DIRECTIONS = 8
MAX_DIRECTIONS = 64
DIRECTION_MEMORY = 256 * 2**20  # bytes of stored directions in automatic directional mode
MODES = ("auto", "full", "directional")


@dataclasses.dataclass(frozen=True)
class FDOptions:
    """Finite-difference settings (the ``**fd_options`` of :func:`gradtest.check_gradients`).

    Attributes
    ----------
    method : {'central', 'forward', 'backward'}
        The difference formula.
    richardson : bool
        Combine steps h and h/2 (Richardson extrapolation): a higher-order result and a
        per-component error estimate, for twice the evaluations.
    rel_step : float
        The step base h0; 0 selects the rule of the docs (scaled to the dtype).
    mode : {'auto', 'full', 'directional'}
        ``'full'`` differentiates every component (O(n) evaluations); ``'directional'`` checks k
        random directions (O(k) evaluations); ``'auto'`` runs full, and switches to directional
        when the full run reaches ``time_budget`` (the report says so).
    time_budget : float
        Seconds the full ground truth may take in ``'auto'`` mode; the directional mode that
        replaces it fills about the same time again.
    n_directions : int or None
        Directions for directional mode; None fills the time budget (at least 8).
    seed : int
        Seed of the random cotangent and directions, so that runs are reproducible.
    """

    method: str = "central"
    richardson: bool = True
    rel_step: float = 0.0
    mode: str = "auto"
    time_budget: float = 5.0
    n_directions: int | None = None
    seed: int = 0

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
        if not (opts.time_budget > 0):
            raise ValueError(f"time_budget: expected seconds > 0, got {opts.time_budget!r}")
        if opts.n_directions is not None and int(opts.n_directions) < 1:
            raise ValueError(f"n_directions: expected an integer >= 1, got {opts.n_directions!r}")
        if not (opts.rel_step >= 0):
            raise ValueError(f"rel_step: expected a number >= 0, got {opts.rel_step!r}")
        return opts

    @property
    def evals_per_component(self) -> int:
        per_step = 2 if self.method == "central" else 1
        return 2 * per_step if self.richardson else per_step

    def describe(self) -> str:
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
        Full mode: the per-component finite-difference error estimates.
    directions : numpy.ndarray or None
        Directional mode: the k x n directions (rows carry the step scale).
    derivatives, derivative_errors : numpy.ndarray or None
        Directional mode: the k directional derivatives and their error estimates.
    method : str
        The formula, e.g. ``'central+Richardson'``.
    evaluations : int
        Calls of f made.
    seconds : float
        Wall time of the ground truth.
    dtype : numpy.dtype
        The dtype it was computed in.
    notes : list of str
        Anything the user should know (mode switches, mutated inputs).
    """

    mode: str
    gradients: list[np.ndarray] | None
    errors: list[np.ndarray] | None
    method: str
    evaluations: int
    seconds: float
    dtype: np.dtype
    directions: np.ndarray | None = None
    derivatives: np.ndarray | None = None
    derivative_errors: np.ndarray | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


class GroundTruthError(ValueError):
    """The ground truth could not be computed (f failed, or returned non-finite values)."""


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
        leaves = output_leaves(problem.f(*args, **kwargs))
        return float(sum(np.vdot(u, np.asarray(leaf, dtype=np.float64)) for u, leaf in zip(out.cotangents, leaves)))

    return reduced, None


def ground_truth(problem: GradientProblem, opts: FDOptions, dtype: Any = np.float64) -> GroundTruth:
    """Computes the finite-difference reference for ``problem``.

    Raises
    ------
    GroundTruthError
        If f raises during the computation or the result is not finite; the message names the
        first non-finite element.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"ground_truth_dtype: expected float64 or float32, got {dtype}")
    ws = _Workspace(problem, dtype)
    fn, u = _reducer(problem)
    if problem.flat.adapters:  # torch/JAX leaves: f sees ws.x as the framework's arrays (frameworks.py)
        from .frameworks import bind_working_copy

        fn = bind_working_copy(fn, problem, ws.args, ws.views)
    start = time.perf_counter()
    mode = opts.mode
    notes: list[str] = []
    # auto: the full run itself is timed and gives way to the directional mode when it reaches
    # the budget; an estimate from a few separate calls of f can be off by orders of magnitude
    # (BLAS worker threads asleep between calls, a loaded machine)
    time_limit = opts.time_budget if mode == "auto" else 0.0
    try:
        # warnings at perturbed points (log of a negative near a domain edge) are not the user's
        # concern: a non-finite result is reported as such
        with np.errstate(all="ignore"):
            result = None
            if mode != "directional":
                result = _full(problem, ws, fn, u, opts, dtype, notes, start, time_limit)
            if result is None:
                result = _directional(ws, fn, u, opts, dtype, notes, start)
    except GroundTruthError:
        raise
    except Exception as exc:
        raise GroundTruthError(f"f raised while computing the ground truth: {exc!r}") from exc
    finally:
        mutated = ws.mutated_paths(problem)
    if mutated:
        result.notes.append(f"f mutated its inputs: {', '.join(mutated)} (the caller's arrays are untouched)")
    return result


def _full(problem, ws, fn, u, opts, dtype, notes, start, time_limit) -> GroundTruth | None:
    """The full ground truth, or None when it reached ``time_limit`` (seconds, 0 for none)
    before the last component."""
    grad, err, f0, evals, nonfinite, completed = _core.fd_gradient(
        fn, ws.args, problem.kwargs or None, ws.x, u, zero_step_scale(ws.x0, ws.offsets), opts.method,
        opts.richardson, float(opts.rel_step), float(time_limit),
    )
    if completed < ws.x.size:
        notes.append(
            f"directional mode: the full ground truth reached time_budget={opts.time_budget} s "
            f"after {completed} of {ws.x.size} components"
        )
        return None
    if nonfinite:
        bad = int(np.flatnonzero(~np.isfinite(grad))[0])
        raise GroundTruthError(
            f"the ground truth is not finite at {_element_name(problem, ws, bad)} "
            f"({nonfinite} of {ws.x.size} components): f returned NaN or inf near the input"
        )
    return GroundTruth("full", ws.split(grad), ws.split(err), opts.describe(), evals + 2,
                       time.perf_counter() - start, dtype, notes=notes)


def _directional(ws, fn, u, opts, dtype, notes, start) -> GroundTruth:
    n = ws.x.size
    k = opts.n_directions or _directions_for_budget(fn, ws, opts)
    rng = np.random.default_rng(opts.seed + 1)
    # directions carry the step scale of each component, as the full mode's steps do
    scale = np.abs(ws.x0.astype(np.float64))
    scale[scale == 0] = 1.0
    dirs = rng.standard_normal((k, n)) * scale
    d, derr, f0, evals = _core.fd_directional(fn, ws.args, None if not ws.kwargs else ws.kwargs, ws.x, u, dirs,
                                              opts.method, opts.richardson, float(opts.rel_step))
    if not np.all(np.isfinite(d)):
        raise GroundTruthError("the directional ground truth is not finite: f returned NaN or inf near the input")
    return GroundTruth("directional", None, None, opts.describe(), evals + 2, time.perf_counter() - start,
                       dtype, directions=dirs, derivatives=d, derivative_errors=derr, notes=notes)


def _directions_for_budget(fn, ws, opts) -> int:
    """As many directions as fit in the time budget, timed on a short burst of calls of f, between
    MIN_DIRECTIONS and MAX_DIRECTIONS (and n); each direction is an n-vector kept for the
    comparison, so their memory is capped too."""
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < 0.02:
        fn(*ws.args, **ws.kwargs)
        calls += 1
    t_eval = (time.perf_counter() - start) / calls
    fit = opts.time_budget / max(t_eval * opts.evals_per_component, 1e-9)
    memory_cap = max(MIN_DIRECTIONS, DIRECTION_MEMORY // (8 * ws.x.size))
    return int(max(MIN_DIRECTIONS, min(ws.x.size, fit, MAX_DIRECTIONS, memory_cap)))


def zero_step_scale(x0: np.ndarray, offsets: Any) -> np.ndarray | None:
    """Step scale for components that are exactly 0: the largest |x| of their leaf (the leaves
    are the segments between consecutive ``offsets`` of the flat vector ``x0``), or 1 when that
    is 0 too. None when no component is 0. The C-kernel runner uses the same rule."""
    if np.all(x0 != 0):
        return None
    scale = np.empty(x0.size)
    for start, stop in zip(offsets[:-1], offsets[1:]):
        seg = np.abs(x0[start:stop].astype(np.float64))
        big = float(seg.max()) if seg.size else 0.0
        scale[start:stop] = big if big > 0 and np.isfinite(big) else 1.0
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
